// Composes the service's subgraph (its `home-visits schema --subgraph`, or a live instance's
// `_service { sdl }`) with a small second subgraph that extends `Visit`, as a router would, with
// Apollo's own composition; any composition error fails.
//   node federation.mjs SUBGRAPH_SDL_FILE       or       node federation.mjs --url URL
import { readFileSync } from "node:fs";
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

const fail = (message) => {
  console.error(`federation: FAILED: ${message}`);
  process.exit(1);
};

const [first, second] = process.argv.slice(2);
let sdl;
if (first === "--url") {
  const response = await fetch(`${second}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ _service { sdl } }" }),
  });
  sdl = (await response.json()).data?._service?.sdl;
  if (!sdl) fail(`${second} answered no _service { sdl }`);
} else if (first) {
  sdl = readFileSync(first, "utf8");
} else {
  fail("usage: node federation.mjs SUBGRAPH_SDL_FILE | --url URL");
}

// Another team's service: ratings of visits, keyed like the home-visits subgraph's Visit.
const ratings = `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
  type Visit @key(fields: "id") {
    id: ID!
    rating: Int
  }
  type Query {
    topRatedVisitIds: [ID!]!
  }
`;

const result = composeServices([
  { name: "home-visits", url: "http://home-visits:8080/graphql", typeDefs: parse(sdl) },
  { name: "ratings", url: "http://ratings:4001/graphql", typeDefs: parse(ratings) },
]);
if (result.errors?.length) {
  fail(result.errors.map((error) => error.message).join("\n"));
}
const supergraph = result.supergraphSdl;
for (const expected of ["rating: Int", "join__type(graph: HOME_VISITS, key: \"id\")", "requestVisit"]) {
  if (!supergraph.includes(expected)) fail(`the supergraph lacks ${expected}`);
}
console.log(`federation: composed home-visits with ratings into a supergraph of ${supergraph.length} bytes`);
