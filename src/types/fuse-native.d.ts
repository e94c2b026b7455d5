// Minimal typing for fuse-native (it ships none).
declare module 'fuse-native' {
  class Fuse {
    constructor(mnt: string, ops: Record<string, (...args: any[]) => void>, opts?: Record<string, unknown>);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static isConfigured(cb: (err: Error | null, configured: boolean) => void): void;
    [k: string]: any;
  }
  export = Fuse;
}
