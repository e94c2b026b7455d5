// The hammer2 command loads only the module of the directive it runs
// (src/cli/hammer2.ts): its table of which module holds which directive
// must name every directive of every module, and nothing else.
import t from 'tap';
import { allDirectiveTables, directive, DIRECTIVE_MODULES } from '../src/cli/hammer2';

t.test('every directive is found in the module the table names', async (t) => {
  const tables = await allDirectiveTables();
  const fromModules = new Map<string, string>();
  for (const [mod, table] of Object.entries(tables)) for (const name of Object.keys(table)) fromModules.set(name, mod);
  t.same(Object.fromEntries([...fromModules].sort()), Object.fromEntries(Object.entries(DIRECTIVE_MODULES).sort()));
  for (const name of Object.keys(DIRECTIVE_MODULES)) t.equal(typeof (await directive(name)), 'function', name);
  t.equal(await directive('no-such-directive'), undefined);
  t.equal(await directive('toString'), undefined);
});
