// Minifies src/tracker.js into gateway/static/script.js, the file the gateway serves (package
// data, so an installed gateway serves it too), and reports its size.
//
//   node build.mjs              write ../gateway/static/script.js
//   node build.mjs --out FILE   write FILE instead (used by the test that checks the committed build)
//   node build.mjs --check      fail if ../gateway/static/script.js differs from a fresh build
//
// Exits non-zero when the gzipped size is over the budget.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { minify } from 'terser'

const BUDGET_GZIP_BYTES = 2400
const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const outArg = args.indexOf('--out')
const out = outArg >= 0 ? args[outArg + 1] : join(here, '..', 'gateway', 'static', 'script.js')

const source = readFileSync(join(here, 'src', 'tracker.js'), 'utf8')
const result = await minify(source, {
  ecma: 2020,
  compress: { passes: 3, unsafe_arrows: true, pure_getters: true },
  mangle: true,
  format: { comments: false, ascii_only: true },
})
const code = result.code + '\n'
const minBytes = Buffer.byteLength(code)
const gzBytes = gzipSync(code, { level: 9 }).length

if (args.includes('--check')) {
  const committed = existsSync(out) ? readFileSync(out, 'utf8') : ''
  if (committed !== code) {
    console.error(`${out} is stale: run \`node build.mjs\` and commit the result`)
    process.exit(1)
  }
  console.log(`${out} is up to date`)
} else {
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, code)
}
console.log(`minified: ${minBytes} bytes, gzip -9: ${gzBytes} bytes (budget ${BUDGET_GZIP_BYTES})`)
if (gzBytes > BUDGET_GZIP_BYTES) {
  console.error(`over budget by ${gzBytes - BUDGET_GZIP_BYTES} bytes`)
  process.exit(1)
}
