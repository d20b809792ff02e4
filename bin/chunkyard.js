#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';
// The AWS SDK warns about Node 20 once per process; it works, and the warning would break one-line output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= '1';
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
