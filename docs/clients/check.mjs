// Runs the set-ups of docs/clients.md, with the clients they name, against a live instance whose
// access tokens live a few seconds (ACCESS_TOKEN_TTL_SECONDS=3): codegen from the URL (the standard
// introspection query), Apollo Client over HTTP and graphql-ws, and the TOKEN_EXPIRED refresh flow.
// Usage: node check.mjs http://127.0.0.1:14021
import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql, split } from "@apollo/client";
import { ErrorLink } from "@apollo/client/link/error";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { generate } from "@graphql-codegen/cli";
import { createClient } from "graphql-ws";
import { Observable } from "rxjs";
import WebSocket from "ws";

const base = process.argv[2] ?? "http://127.0.0.1:8080";
const fail = (message) => {
  console.error(`client recipe: FAILED: ${message}`);
  process.exit(1);
};
const within = (ms, promise, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms))]);

// 0. The instance may still be starting.
for (let attempt = 0; ; attempt += 1) {
  const ready = await fetch(`${base}/readyz`).then((response) => response.ok, () => false);
  if (ready) break;
  if (attempt === 150) fail(`${base} never became ready`);
  await new Promise((resolve) => setTimeout(resolve, 200));
}

// 1. Codegen from the URL, with the recipe's scalar mapping.
const [generated] = await generate(
  {
    schema: `${base}/graphql`,
    silent: true,
    generates: { "types.ts": { plugins: ["typescript"], config: { scalars: { Date: "string", DateTime: "string" } } } },
  },
  false,
);
for (const scalar of ["Date", "DateTime"]) {
  if (!generated.content.includes(`${scalar}: { input: string; output: string; }`)) {
    fail(`codegen did not map ${scalar}`);
  }
}

// 2. Two users, through a plain client.
const anonymous = new ApolloClient({ link: new HttpLink({ uri: `${base}/graphql` }), cache: new InMemoryCache() });
const REGISTER = gql`mutation ($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id } } }`;
const register = async (name) => {
  const { data } = await anonymous.mutate({
    mutation: REGISTER,
    variables: { input: { email: `${name}-${Date.now()}@recipe.test`, password: "correct horse battery", firstName: name, lastName: "Recipe" } },
  });
  return data.register;
};
const ann = await register("ann");
const bob = await register("bob");

// The app's token store: the recipe's `session`.
const session = {
  tokens: { access: ann.accessToken, refresh: ann.refreshToken },
  refreshes: 0,
  inFlight: null,
  // For a (re)connecting socket: a token that has not expired, refreshed first if it has.
  async accessToken() {
    const { exp } = JSON.parse(Buffer.from(this.tokens.access.split(".")[1], "base64url").toString());
    if (exp * 1000 <= Date.now() + 500) await this.refresh();
    return this.tokens.access;
  },
  // One refresh at a time: a refresh token used twice ends the session.
  refresh() {
    this.inFlight ??= anonymous
      .mutate({
        mutation: gql`mutation ($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken refreshToken } }`,
        variables: { input: { refreshToken: this.tokens.refresh } },
      })
      .then(({ data }) => {
        this.tokens = { access: data.refreshSession.accessToken, refresh: data.refreshSession.refreshToken };
        this.refreshes += 1;
      })
      .finally(() => (this.inFlight = null));
    return this.inFlight;
  },
};

// 3. The recipe's Apollo Client.
const wsClient = createClient({
  url: `${base.replace(/^http/, "ws")}/graphql`,
  webSocketImpl: WebSocket,
  connectionParams: async () => ({ authorization: `Bearer ${await session.accessToken()}` }),
});
const ws = new GraphQLWsLink(wsClient);
const auth = new ApolloLink((operation, forward) => {
  operation.setContext(({ headers }) => ({ headers: { ...headers, authorization: `Bearer ${session.tokens.access}` } }));
  return forward(operation);
});
const refresh = new ErrorLink(({ error, operation, forward }) => {
  const expired = CombinedGraphQLErrors.is(error) && error.errors.some((e) => e.extensions?.reason === "TOKEN_EXPIRED");
  if (!expired || operation.getContext().retried) return;
  return new Observable((observer) => {
    session
      .refresh()
      .then(() => {
        operation.setContext({ retried: true });
        forward(operation).subscribe(observer);
      })
      .catch((failure) => observer.error(failure));
  });
});
const isSubscription = ({ query }) => {
  const definition = getMainDefinition(query);
  return definition.kind === "OperationDefinition" && definition.operation === "subscription";
};
const client = new ApolloClient({
  link: split(isSubscription, ws, ApolloLink.from([refresh, auth, new HttpLink({ uri: `${base}/graphql` })])),
  cache: new InMemoryCache(),
});

// 4. A live update: Ann watches her visits; Bob takes the one she requests.
const seen = [];
let lastCursor;
const accepted = new Promise((resolve, reject) => {
  const subscription = client
    .subscribe({ query: gql`subscription { myVisits { cursor type visitId visit { id status } } }` })
    .subscribe({
      next: ({ data, error }) => {
        if (error) return reject(error);
        seen.push(data.myVisits.type);
        lastCursor = data.myVisits.cursor;
        if (data.myVisits.type === "ACCEPTED") {
          subscription.unsubscribe();
          resolve(data.myVisits);
        }
      },
      error: reject,
    });
});
// The socket must be up (acknowledged) before the change, as a real screen would be.
await within(10_000, new Promise((resolve) => wsClient.on("connected", resolve)), "connection_ack");
await new Promise((resolve) => setTimeout(resolve, 300));
const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
const { data: booked } = await client.mutate({
  mutation: gql`mutation ($input: RequestVisitInput!) { requestVisit(input: $input) { id status } }`,
  variables: { input: { date: tomorrow, minutes: 30, tasks: [{ name: "Shopping" }] } },
});
const bobs = await fetch(`${base}/graphql`, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${bob.accessToken}` },
  body: JSON.stringify({ query: "mutation ($id: ID!) { acceptVisit(id: $id) { status } }", variables: { id: booked.requestVisit.id } }),
}).then((response) => response.json());
if (bobs.data?.acceptVisit?.status !== "ACCEPTED") fail(`Bob could not accept: ${JSON.stringify(bobs)}`);
const event = await within(10_000, accepted, "myVisits");
if (event.visitId !== booked.requestVisit.id || event.visit.status !== "ACCEPTED") fail(`wrong event ${JSON.stringify(event)}`);
// Bob finishes the visit while Ann's app is not subscribed: step 6 resumes from her last cursor.
const done = await fetch(`${base}/graphql`, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${bob.accessToken}` },
  body: JSON.stringify({ query: "mutation ($id: ID!) { completeVisit(id: $id) { id } }", variables: { id: booked.requestVisit.id } }),
}).then((response) => response.json());
if (!done.data?.completeVisit?.id) fail(`Bob could not complete: ${JSON.stringify(done)}`);

// 5. The refresh flow: once the access token has expired (3 s, plus the server's 5 s of leeway
// for clock skew), a query refreshes and retries once.
await new Promise((resolve) => setTimeout(resolve, 9_000));
const { data: me } = await client.query({ query: gql`{ me { id } }`, fetchPolicy: "network-only" });
if (me.me.id !== ann.user.id) fail(`me after the refresh: ${JSON.stringify(me)}`);
if (session.refreshes !== 1) fail(`expected one refresh, saw ${session.refreshes}`);

// 6. Resuming with plain graphql-ws: Bob finished the visit while nobody watched (above). The recipe
// keeps the last cursor in the payload graphql-ws sends again on every reconnect.
const resumed = [];
const payload = {
  query: "subscription ($after: String) { myVisits(after: $after) { cursor type visitId } }",
  variables: { after: lastCursor },
};
let gotTwo;
const two = new Promise((resolve) => (gotTwo = resolve));
wsClient.subscribe(payload, {
  next: ({ data }) => {
    payload.variables.after = data.myVisits.cursor;
    resumed.push(data.myVisits.type);
    if (resumed.length === 2) gotTwo();
  },
  error: (error) => fail(`resumed myVisits: ${JSON.stringify(error)}`),
  complete: () => {},
});
await within(10_000, new Promise((resolve) => { const poll = () => (resumed.length ? resolve() : setTimeout(poll, 50)); poll(); }), "the missed COMPLETED");
// The server closes the socket when its token expires (4403, every 3 s here); graphql-ws reconnects
// with a fresh one and sends the payload again, with the newest cursor. Ann books again while the
// socket is down.
await within(15_000, new Promise((resolve) => wsClient.on("closed", (event) => event.code === 4403 && resolve())), "the 4403 at the token's expiry");
const { data: another } = await client.mutate({
  mutation: gql`mutation ($input: RequestVisitInput!) { requestVisit(input: $input) { id } }`,
  variables: { input: { date: tomorrow, minutes: 15, tasks: [{ name: "Reading" }] } },
});
await within(15_000, two, "the REQUESTED after the reconnect");
await new Promise((resolve) => setTimeout(resolve, 1_000));
if (resumed.join(",") !== "COMPLETED,REQUESTED") fail(`resumed myVisits saw ${resumed.join(", ")}`);
if (!another.requestVisit.id) fail("no second visit");

await wsClient.dispose();
console.log(
  `client recipe: ok (codegen mapped Date and DateTime; myVisits saw ${seen.join(", ")}; ` +
    `an expired token was refreshed once and the query retried; resumed from a cursor: ${resumed.join(", ")})`,
);
process.exit(0);
