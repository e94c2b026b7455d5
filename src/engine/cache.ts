// A byte-budgeted LRU: a Map for lookup and an intrusive doubly linked list
// for recency, so a hit only relinks two nodes. (Re-inserting into the Map
// on every hit, the shorter way, left deleted slots that made hits and
// evictions pathologically slow on large caches.)

interface Slot<K, V> {
  k: K;
  v: V;
  size: number;
  prev: Slot<K, V> | null;
  next: Slot<K, V> | null;
}

export class LruCache<K, V> {
  private map = new Map<K, Slot<K, V>>();
  /** Most recently used. */
  private head: Slot<K, V> | null = null;
  /** Least recently used. */
  private tail: Slot<K, V> | null = null;
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private budget: number) {}

  /** Change the byte budget, evicting the least recently used entries down to it at once. */
  setBudget(n: number): void {
    this.budget = n;
    this.evict();
  }

  private evict(): void {
    while (this.bytes > this.budget && this.tail) {
      const t = this.tail;
      this.unlink(t);
      this.map.delete(t.k);
      this.bytes -= t.size;
    }
  }

  private unlink(s: Slot<K, V>): void {
    if (s.prev) s.prev.next = s.next;
    else this.head = s.next;
    if (s.next) s.next.prev = s.prev;
    else this.tail = s.prev;
    s.prev = s.next = null;
  }

  private pushFront(s: Slot<K, V>): void {
    s.prev = null;
    s.next = this.head;
    if (this.head) this.head.prev = s;
    this.head = s;
    if (!this.tail) this.tail = s;
  }

  get(k: K): V | undefined {
    const s = this.map.get(k);
    if (!s) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    if (s !== this.head) {
      this.unlink(s);
      this.pushFront(s);
    }
    return s.v;
  }

  set(k: K, v: V, size: number): void {
    const old = this.map.get(k);
    if (old) {
      this.bytes -= old.size;
      this.unlink(old);
      this.map.delete(k);
    }
    if (size > this.budget) return;
    const s: Slot<K, V> = { k, v, size, prev: null, next: null };
    this.map.set(k, s);
    this.pushFront(s);
    this.bytes += size;
    this.evict();
  }

  delete(k: K): void {
    const s = this.map.get(k);
    if (!s) return;
    this.bytes -= s.size;
    this.unlink(s);
    this.map.delete(k);
  }

  clear(): void {
    this.map.clear();
    this.head = this.tail = null;
    this.bytes = 0;
  }

  get size(): number {
    return this.bytes;
  }
}
