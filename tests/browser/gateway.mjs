// A company's supergraph with idgraph in it, as the company would run it: a small HR subgraph
// (an `Employee` keyed by email, whose `agent` is idgraph's `Agent` by email) built with Apollo's
// `@apollo/subgraph`, composed with idgraph's subgraph (its `_service { sdl }`) by The Guild's
// `@theguild/federation-composition`, served by Hive Gateway (`@graphql-hive/gateway`, from npm),
// which passes the caller's Authorization header on to the subgraphs.
// Usage: node gateway.mjs IDGRAPH_SUBGRAPH_URL TOKEN EMPLOYEE_EMAIL WORK_DIR
// Prints one JSON line: {"answer": <the gateway's answer to the query below>, "supergraph": path}.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parse, graphql } from 'graphql';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { composeServices } from '@theguild/federation-composition';

const [idgraphUrl, token, email, work] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
  type Query { employees: [Employee!]! }
  type Employee @key(fields: "email") { email: String! name: String! department: String! agent: Agent }
  type Agent @key(fields: "email", resolvable: false) { email: String }
`);
const EMPLOYEES = [{ email, name: 'Ada Analyst', department: 'Sales' }];
const schema = buildSubgraphSchema({
  typeDefs,
  resolvers: {
    Query: { employees: () => EMPLOYEES },
    Employee: { agent: (e) => ({ __typename: 'Agent', email: e.email }) },
  },
});

const hr = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', async () => {
    const { query, variables } = JSON.parse(body || '{}');
    const r = await graphql({ schema, source: query, variableValues: variables });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(r));
  });
});
await new Promise((ok) => hr.listen(0, '127.0.0.1', ok));
const hrUrl = `http://127.0.0.1:${hr.address().port}/graphql`;

const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
const sdlAnswer = await (await fetch(idgraphUrl, { method: 'POST', headers: auth, body: JSON.stringify({ query: '{ _service { sdl } }' }) })).json();
if (!sdlAnswer.data) {
  console.error('idgraph did not answer _service:', JSON.stringify(sdlAnswer));
  process.exit(2);
}
const hrSdl = (await graphql({ schema, source: '{ _service { sdl } }' })).data._service.sdl;
const composed = composeServices([
  { name: 'idgraph', typeDefs: parse(sdlAnswer.data._service.sdl), url: idgraphUrl },
  { name: 'hr', typeDefs: parse(hrSdl), url: hrUrl },
]);
if (composed.errors && composed.errors.length) {
  console.error('composition failed:', composed.errors.map((e) => e.message).join('\n'));
  process.exit(3);
}
const supergraph = path.join(work, 'supergraph.graphql');
fs.writeFileSync(supergraph, composed.supergraphSdl);
fs.writeFileSync(
  path.join(work, 'gateway.config.mjs'),
  `export const gatewayConfig = {
  propagateHeaders: {
    fromClientToSubgraphs({ request }) { return { authorization: request.headers.get('authorization') }; },
  },
};
`,
);

const port = await new Promise((ok) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
});
const gw = spawn(path.join(here, 'node_modules/.bin/hive-gateway'),
  ['supergraph', supergraph, '--port', String(port), '--host', '127.0.0.1', '-c', path.join(work, 'gateway.config.mjs')],
  { cwd: work, stdio: ['ignore', 'ignore', 'inherit'] });
const gwUrl = `http://127.0.0.1:${port}/graphql`;
const query = `{ employees { email name agent { id email status contactCount ownedContacts(first: 100) { totalCount edges { node { id email } } } } } }`;
let answer = null;
for (let i = 0; i < 300 && answer === null; i++) {
  try {
    const r = await fetch(gwUrl, { method: 'POST', headers: auth, body: JSON.stringify({ query }) });
    if (r.ok) answer = await r.json();
  } catch { /* not listening yet */ }
  if (answer === null) await new Promise((ok) => setTimeout(ok, 200));
}
gw.kill();
hr.close();
console.log(JSON.stringify({ answer, supergraph, gateway: gwUrl }));
process.exit(answer === null ? 4 : 0);
