// The media codec: pure functions from bytes to HAMMER2 structures and back.
// No I/O here; every tool (mount, newfs, fsck, hammer2) decodes through it.
export * from './constants';
export * from './crc32c';
export * from './check';
export * from './compress';
export * from './lz4';
export * from './blockref';
export * from './volume';
export * from './inode';
export * from './dirent';
export * from './uuid';
export * from './freemap';
export { putU64 } from './u64';
