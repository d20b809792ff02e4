/** Extended attributes of real files, for tests that compare trees (Node has no xattr API). Test-only code. */
import { python3, run } from './tools.js';

/**
 * Reads every xattr (all namespaces, incl. security.capability and
 * system.posix_acl_*) of each path without following symlinks, in one
 * python3 process. Paths go in NUL-separated; names and values come back hex.
 */
const XATTR_SCRIPT = `
import os, sys, json, errno
paths = sys.stdin.buffer.read().split(b'\\0')[:-1]
out = []
for p in paths:
    attrs = []
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            raise
        names = []
    for n in names:
        v = os.getxattr(p, n, follow_symlinks=False)
        attrs.append([os.fsencode(n).hex(), v.hex()])
    out.append(attrs)
sys.stdout.write(json.dumps(out))
`;

export async function readXattrs(paths: readonly Buffer[]): Promise<Array<Map<string, Buffer>>> {
  const input = Buffer.concat(paths.flatMap((p) => [p, Buffer.from([0])]));
  const { stdout } = await run(await python3(), ['-c', XATTR_SCRIPT], { input });
  const parsed = JSON.parse(stdout) as Array<Array<[string, string]>>;
  if (parsed.length !== paths.length) throw new Error(`xattr reader returned ${parsed.length} entries for ${paths.length} paths`);
  return parsed.map((attrs) => new Map(attrs.map(([n, v]) => [Buffer.from(n, 'hex').toString('latin1'), Buffer.from(v, 'hex')])));
}
