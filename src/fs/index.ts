// Filesystem semantics (inodes, directories, files) over the engine; no FUSE here.
export * from './pfs';
export * from './filesystem';
export * from './flush';
