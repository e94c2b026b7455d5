// The engine: blocks through blockrefs, radix-tree walks, the device and its PFSs.
export * from './errors';
export * from './cache';
export * from './blocks';
export * from './tree';
export * from './hammer2';
export * from './apply';
export * from './writer';
export * from './freemap';
export * from './bulkfree';
