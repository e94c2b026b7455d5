// Copies: a PFS kept on several images, verified, repaired and resynchronized.
export { PfsCluster } from './cluster';
export type { CopyState, CopyStatus, ClusterOptions } from './cluster';
