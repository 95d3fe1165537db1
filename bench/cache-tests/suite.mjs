// Helpers for bench/cache_tests.py around the installed http-cache-tests package (its folder
// is the working directory):
//   node suite.mjs server PORT   the suite's test server, on 127.0.0.1 only (its own binds every
//                                interface; nobody else on the network needs to reach it)
//   node suite.mjs tests         every test the CLI runs, as JSON: id, name, kind, depends_on
import http from 'http'
import process from 'process'
import { pathToFileURL } from 'url'

const suite = (file) => import(pathToFileURL(`${process.cwd()}/${file}`).href)
const [mode, port] = process.argv.slice(2)

if (mode === 'server') {
  const listen = http.Server.prototype.listen
  http.Server.prototype.listen = function (p, ...rest) { return listen.call(this, p, '127.0.0.1', ...rest) }
  Object.assign(process.env, { npm_config_protocol: 'http', npm_config_port: port, npm_config_pidfile: '/dev/null' })
  await suite('server/server.mjs')
} else if (mode === 'tests') {
  const tests = (await suite('tests/index.mjs')).default
  tests.push((await suite('tests/surrogate-control.mjs')).default) // as cli.mjs does
  const all = tests.flatMap(s => s.tests.filter(t => !t.browser_only).map(t => ({
    id: t.id, name: t.name, kind: t.kind || 'required', depends_on: t.depends_on || []
  })))
  console.log(JSON.stringify(all))
} else {
  console.error('usage: node suite.mjs server PORT | tests')
  process.exit(2)
}
