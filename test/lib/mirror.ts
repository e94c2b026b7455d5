// A master and a slave for the mirroring tests.
import * as path from 'node:path';
import { newImage, runH2 } from './cli';
import { mount } from './mount';
import { PfsType } from '../../src/media';
import { fsckBoth, imageTree, openRw, treeDiff } from './pfstree';

/**
 * A master image with PFS DATA mounted at `A.dir/master` (with `args`), and
 * a second image holding an empty SLAVE "M" of DATA's cluster, not mounted.
 */
export async function mountedMasterAndSlave(
  t: Parameters<typeof newImage>[0] & Parameters<typeof mount>[0] & { equal: (a: unknown, b: unknown, m?: string) => void },
  args: string[] = [],
  size = 512 << 20,
) {
  const A = await newImage(t, size, ['DATA']);
  const B = await newImage(t, size, ['none']);
  const mnt = path.join(A.dir, 'master');
  const m = await mount(t, `${A.img}@DATA`, mnt, args);
  const clid = (await runH2(['-s', mnt, 'pfs-clid', 'DATA'])).out.trim();
  t.equal((await runH2(['-s', B.img, '-t', 'SLAVE', '-u', clid, 'pfs-create', 'M'])).status, 0, 'slave made');
  return { A, B, mnt, m };
}

/**
 * In process: a master image with PFS DATA and a second image holding an
 * empty SLAVE `slaveLabel` of DATA's cluster, both open read-write (closed
 * at the end of the test).
 */
export async function openMasterAndSlave(t: Parameters<typeof newImage>[0], slaveLabel: string) {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const a = await openRw(A.img);
  const b = await openRw(B.img);
  t.teardown(() => {
    a.close();
    b.close();
  });
  const clid = a.dev.findPfs('DATA')!.inode.meta.pfsClid;
  b.createPfs(slaveLabel, { type: PfsType.SLAVE, clid });
  return { A, B, a, b, clid, p: a.pfs('DATA')! };
}

/** The end of a mirroring test: the slave PFS `label` of `slave` holds DATA of `master` exactly, and both images pass both fscks. */
export async function slaveHoldsMaster(
  t: Parameters<typeof fsckBoth>[0] & { same: (a: unknown, b: unknown, m?: string) => void },
  master: string,
  slave: string,
  label: string,
  what: string,
): Promise<void> {
  t.same(treeDiff(await imageTree(master, 'DATA'), await imageTree(slave, label)), [], what);
  await fsckBoth(t, master, 'master');
  await fsckBoth(t, slave, 'slave');
}
