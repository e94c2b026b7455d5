// Mirroring: a PFS streamed to a slave PFS by transaction id (format in docs/notes/mirror-stream.md).
export { mirrorRead, mirrorReadRoot, mirrorWrite, mirrorWriteAhead, mirrorCopy, mirrorCopyFrom, slaveRefusal } from './mirror';
export type { WriteAhead, WriteResult } from './mirror';
export { StreamParser, StreamFeeder, StreamError, BufferSource, FdSource, encodeHeader, STREAM_VERSION } from './stream';
export type { ByteSource, StreamHeader } from './stream';
