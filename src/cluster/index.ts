// Copies: a PFS kept on several images, verified, repaired and resynchronized.
export { PfsCluster, relation } from './cluster';
export type { CopyState, CopyStatus, ClusterOptions, AddOptions, NodeTids, ScrubReport } from './cluster';
