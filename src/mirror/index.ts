// Mirroring: a PFS streamed to a slave PFS by transaction id (format in docs/notes/mirror-stream.md).
export { mirrorRead, mirrorReadRoot, mirrorReadBatches, mirrorWrite, mirrorWriteAhead, mirrorCopy, mirrorCopyFrom, slaveRefusal } from './mirror';
export type { WriteAhead, WriteResult } from './mirror';
export type { ReadStats } from './read';
export { pumpSliced } from './pump';
export type { PumpOptions } from './pump';
export { StreamParser, StreamFeeder, StreamError, BufferSource, FdSource, encodeHeader, STREAM_VERSION } from './stream';
export type { ByteSource, StreamHeader } from './stream';
