// The daemon that owns an open image and serves all its mounts.
export { ImageDaemon, TRIM_IDLE_MS, trimDue } from './daemon';
export type { DaemonOptions } from './daemon';
export { parseOptions, setMountBdi, mountTable, hammer2MountOf, absCopyOptions, absSpec, DAEMON_NODE_FLAGS } from './options';
export type { ParsedOptions, Mount } from './options';
