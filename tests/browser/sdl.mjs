// An independent client fetches idgraph's schema by introspection, as GraphiQL, Apollo tooling
// and graphql-codegen do (graphql-js getIntrospectionQuery + buildClientSchema), and prints it.
// Usage: node sdl.mjs GRAPHQL_URL SCHEMA_FILE -> {"same": true|false, ...}
import { readFileSync } from 'node:fs';
import {
  buildClientSchema, buildSchema, getIntrospectionQuery, lexicographicSortSchema, printSchema,
} from 'graphql';

const [url, file] = process.argv.slice(2);
const query = getIntrospectionQuery({
  descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true,
  schemaDescription: true, inputValueDeprecation: true,
});
const started = Date.now();
const resp = await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
  body: JSON.stringify({ query, operationName: 'IntrospectionQuery' }),
});
const body = await resp.json();
const ms = Date.now() - started;
if (body.errors) {
  console.log(JSON.stringify({ same: false, status: resp.status, errors: body.errors }));
  process.exit(1);
}
// async-graphql describes the schema itself with the spec's generic sentence, which SDL
// (schema.graphql) has no place for: compare everything else.
body.data.__schema.description = null;
const fetched = printSchema(lexicographicSortSchema(buildClientSchema(body.data)));
const checkedIn = printSchema(lexicographicSortSchema(buildSchema(readFileSync(file, 'utf8'))));
const same = fetched === checkedIn;
if (!same) {
  const a = fetched.split('\n'); const b = checkedIn.split('\n');
  const i = a.findIndex((l, k) => l !== b[k]);
  console.log(JSON.stringify({ same, line: i, fetched: a.slice(i, i + 5), checkedIn: b.slice(i, i + 5) }));
  process.exit(1);
}
console.log(JSON.stringify({ same, types: Object.keys(buildClientSchema(body.data).getTypeMap()).length, ms }));
