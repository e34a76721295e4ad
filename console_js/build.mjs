// Copies the chart library's own minified build into gateway/static/console/ (package data, so
// an installed gateway serves the console without a CDN or Node), with its licence.
//
//   node build.mjs           write ../gateway/static/console/chart.umd.min.js and chart.LICENSE.md
//   node build.mjs --check   fail if the committed copies differ from node_modules (after `npm ci`)
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = join(here, '..', 'gateway', 'static', 'console')
const files = [
  ['node_modules/chart.js/dist/chart.umd.min.js', 'chart.umd.min.js'],
  ['node_modules/chart.js/LICENSE.md', 'chart.LICENSE.md'],
]
let stale = false
mkdirSync(outDir, { recursive: true })
for (const [from, to] of files) {
  const body = readFileSync(join(here, from))
  const target = join(outDir, to)
  if (process.argv.includes('--check')) {
    if (!existsSync(target) || !readFileSync(target).equals(body)) {
      console.error(`${target} is stale: run \`make console-js\` and commit the result`)
      stale = true
    }
  } else {
    writeFileSync(target, body)
    console.log(`${target}: ${body.length} bytes`)
  }
}
process.exit(stale ? 1 : 0)
