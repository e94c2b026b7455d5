// Serve ToyFs on a mountpoint: `node <ts loader> test/lib/toyfs-main.ts MNT [JSON options]`
// (FuseSessionOptions, plus `toy: { readdirplus: true }` for the toy itself).
// Prints one JSON line {"ready": true, "conn": ...} once mounted; SIGINT/SIGTERM
// unmount and exit 0. The serving process never touches its own mount.
import { FuseSession, FuseSessionOptions } from '../../src/fuse/lowlevel';
import { ToyFs } from './toyfs';

async function main(): Promise<void> {
  const mnt = process.argv[2];
  if (!mnt) throw new Error('usage: toyfs-main MOUNTPOINT [JSON FuseSessionOptions]');
  const { toy, ...opts } = JSON.parse(process.argv[3] ?? '{}') as FuseSessionOptions & { toy?: { readdirplus?: boolean } };
  const fs = new ToyFs(toy);
  const session = new FuseSession(mnt, { options: ['fsname=toyfs', 'subtype=toyfs', 'allow_other', 'default_permissions'], ...opts }, fs.ops());
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`toyfs: ${sig}, unmounting\n`);
    void session.unmount();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  session.closed.then((end) => {
    process.stderr.write(`toyfs: session ended: ${end.message}\n`);
    process.exitCode = end.ok ? 0 : 1;
    // Node exits by itself: nothing else keeps the loop alive.
  });
  await session.mount();
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid, conn: session.conn }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`toyfs: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
