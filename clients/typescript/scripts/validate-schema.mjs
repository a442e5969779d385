// Validates schema/openrpc.json against the official OpenRPC meta-schema
// (@open-rpc/meta-schema, whose JSON Schema parts refer to
// @json-schema-tools/meta-schema), and every schema/types/*.json file against
// JSON Schema draft-07. Exits non-zero with the validator's findings.
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import openrpcMeta from "@open-rpc/meta-schema";
import jsonSchemaMeta from "@json-schema-tools/meta-schema";

const here = dirname(fileURLToPath(import.meta.url));
const schemaDir = process.argv[2] ?? join(here, "..", "..", "..", "schema");

const unwrap = (m) => m.default ?? m;
const openrpcSchema = structuredClone(unwrap(openrpcMeta).openrpcDocument ?? unwrap(openrpcMeta));
const jsonSchemaSchema = structuredClone(unwrap(jsonSchemaMeta).jsonSchema ?? unwrap(jsonSchemaMeta));

// Both meta-schemas name a custom "$schema" URL; they are draft-07 documents.
for (const s of [openrpcSchema, jsonSchemaSchema]) s.$schema = "http://json-schema.org/draft-07/schema#";

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema(jsonSchemaSchema, "https://meta.json-schema.tools");
const validateDocument = ajv.compile(openrpcSchema);

let failures = 0;
const report = (what, errors) => {
  failures++;
  console.error(`${what} is not valid:`);
  for (const e of errors.slice(0, 20)) console.error(`  ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
};

const docPath = join(schemaDir, "openrpc.json");
const doc = JSON.parse(readFileSync(docPath, "utf8"));
if (!validateDocument(doc)) report(docPath, validateDocument.errors);

// The document's own references must resolve: ajv compiles each component
// schema with the document registered, which fails on a dangling $ref.
const docAjv = new Ajv({ strict: false, validateFormats: false });
docAjv.addSchema(doc, "openrpc.json");
for (const name of Object.keys(doc.components.schemas)) {
  try {
    docAjv.getSchema(`openrpc.json#/components/schemas/${name}`);
  } catch (e) {
    report(`components.schemas.${name}`, [{ instancePath: "", message: e.message, params: {} }]);
  }
}

const typesDir = join(schemaDir, "types");
const typesAjv = new Ajv({ strict: false, validateFormats: false });
const files = readdirSync(typesDir).filter((f) => f.endsWith(".json")).sort();
for (const f of files) typesAjv.addSchema(JSON.parse(readFileSync(join(typesDir, f), "utf8")));
for (const f of files) {
  try {
    if (!typesAjv.getSchema(f)) throw new Error("not registered under its $id");
  } catch (e) {
    report(join(typesDir, f), [{ instancePath: "", message: e.message, params: {} }]);
  }
}

if (failures) process.exit(1);
console.log(`${docPath}: valid OpenRPC ${doc.openrpc} (${doc.methods.length} methods, ${doc["x-notifications"].length} notifications); ${files.length} type schemas compile`);
