// Administration of an open image (PFS management, snapshots, per-inode
// methods, bulkfree): the requests the hammer2 command sends, served by a
// daemon for its mounts or run in-process on an unmounted image.
export * from './ops';
