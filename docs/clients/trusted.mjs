// The trusted-documents recipe of docs/clients.md, run with the real codegen:
//   node trusted.mjs generate OUT_DIR        writes OUT_DIR/persisted-documents.json (client preset)
//   node trusted.mjs check URL OUT_DIR       against an instance started with that manifest in
//                                            production: the operations run by hash, a free-form
//                                            document is refused with PERSISTED_QUERY_NOT_IN_LIST
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { generate } from "@graphql-codegen/cli";

const here = dirname(fileURLToPath(import.meta.url));
const [command, ...rest] = process.argv.slice(2);
const fail = (message) => {
  console.error(`trusted documents: FAILED: ${message}`);
  process.exit(1);
};

if (command === "generate") {
  const [out] = rest;
  await generate(
    {
      schema: join(here, "..", "..", "schema.graphql"),
      documents: [join(here, "operations.graphql")],
      silent: true,
      generates: {
        [`${out}/`]: {
          preset: "client",
          presetConfig: { persistedDocuments: { hashAlgorithm: "sha256" } },
          config: { scalars: { Date: "string", DateTime: "string" } },
        },
      },
    },
    true,
  );
  const manifest = JSON.parse(readFileSync(join(out, "persisted-documents.json"), "utf8"));
  if (Object.keys(manifest).length !== 2) fail(`expected 2 documents, got ${JSON.stringify(manifest)}`);
  console.log(`trusted documents: ${out}/persisted-documents.json holds ${Object.keys(manifest).length} documents`);
} else if (command === "check") {
  const [base, out] = rest;
  const manifest = JSON.parse(readFileSync(join(out, "persisted-documents.json"), "utf8"));
  const hashOf = (name) => {
    const found = Object.entries(manifest).find(([, body]) => body.includes(name));
    if (!found) fail(`no document ${name} in the manifest`);
    return found[0];
  };
  for (let attempt = 0; ; attempt += 1) {
    const ready = await fetch(`${base}/readyz`).then((response) => response.ok, () => false);
    if (ready) break;
    if (attempt === 150) fail(`${base} never became ready`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const send = async (body, token) => {
    const response = await fetch(`${base}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return response.json();
  };
  const registered = await send({
    documentId: `sha256:${hashOf("mutation Register")}`,
    variables: { input: { email: `trusted-${Date.now()}@recipe.test`, password: "correct horse battery", firstName: "Tru", lastName: "Sted" } },
  });
  const token = registered.data?.register?.accessToken;
  if (!token) fail(`Register by hash: ${JSON.stringify(registered)}`);
  const me = await send({ extensions: { persistedQuery: { version: 1, sha256Hash: hashOf("query Me") } } }, token);
  if (me.data?.me?.id !== registered.data.register.user.id) fail(`Me by hash: ${JSON.stringify(me)}`);
  const stranger = await send({ query: "{ me { id email } }" }, token);
  if (stranger.errors?.[0]?.extensions?.code !== "PERSISTED_QUERY_NOT_IN_LIST") {
    fail(`a free-form document was not refused: ${JSON.stringify(stranger)}`);
  }
  console.log("trusted documents: Register and Me ran by hash; a free-form document was refused");
} else {
  fail("usage: node trusted.mjs generate OUT_DIR | check URL OUT_DIR");
}
