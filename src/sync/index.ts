// The synchronizer: bring one node's copy of a PFS level with another's by
// comparing trees under transaction ids (copies' resync, healing, mirroring).
export { syncPfs, sameLeaf, emptyStats, syncedTid, SourceError, copyInode, unskipped, leavesIn } from './tree';
export type { SyncCursor, SyncStats, SyncSide, SyncTarget, SyncOptions, PfsSyncResult } from './tree';
export { verifyPfs } from './verify';
export type { Damage, VerifyStats } from './verify';
