// A byte-budgeted LRU. Map iteration order is insertion order, so a hit is
// re-inserted to become the newest and eviction takes from the front.

export class LruCache<K, V> {
  private map = new Map<K, { v: V; size: number }>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly budget: number) {}

  get(k: K): V | undefined {
    const e = this.map.get(k);
    if (!e) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(k);
    this.map.set(k, e);
    return e.v;
  }

  set(k: K, v: V, size: number): void {
    const old = this.map.get(k);
    if (old) {
      this.bytes -= old.size;
      this.map.delete(k);
    }
    if (size > this.budget) return;
    this.map.set(k, { v, size });
    this.bytes += size;
    while (this.bytes > this.budget) {
      const first = this.map.keys().next();
      if (first.done) break;
      const e = this.map.get(first.value)!;
      this.map.delete(first.value);
      this.bytes -= e.size;
    }
  }

  delete(k: K): void {
    const e = this.map.get(k);
    if (e) {
      this.bytes -= e.size;
      this.map.delete(k);
    }
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.bytes;
  }
}
