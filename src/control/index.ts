// The control channel between the hammer2 command (and second mounts) and
// the daemon that owns an image: a unix socket per image, JSON lines.
export * from './protocol';
export * from './paths';
export { ControlServer, socketAlive } from './server';
export type { ControlOp, OpContext, Peer, ControlServerOptions } from './server';
export { ControlClient } from './client';
export { openPeerPipe, ownPipe, pipeRefused } from './pipe';
export type { PipeSpec } from './pipe';
