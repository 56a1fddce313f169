// Every ```ts block of clients/typescript/README.md, run in order against a live mesh.
//
// services/tickmesh/tests/it/sdk_typescript.rs starts `tickmesh up` on consecutive ports and
// runs this (`node --test dist-test/readme.test.js`) with the addresses in TICKMESH_QUERY /
// TICKMESH_INGESTION / TICKMESH_COMPUTATION and the GOOG daily CSV of the `backtesting` package
// in GOOG_CSV; by hand, see the README's Tests section (a `tickmesh up` on an empty store: the
// README's first block stores the bars the others read).
//
// The blocks are written as a user reads them: `tickmesh up` on its default ports (query
// 127.0.0.1:7404, ingestion 7401, computation 7402), a GOOG.csv in the working directory, other
// paths relative to the repository root. Each documented address and data file is replaced by
// the live one, explicitly: a block naming an address or a file this test does not know fails,
// so the README cannot drift to something the test quietly runs differently.
//
// The blocks share one scope, as the README says (later ones use the `client` and arrays of
// earlier ones): they are written, in order, into one ES module inside this package (so
// `@tickmesh/client` resolves to it by the package's self-reference), their imports merged at
// its top (ES imports are hoisted anyway, so this changes nothing but lets every block import
// what it uses), type-checked with the package's tsc and imported. The module tells this test
// when each block starts; each block is its own test case, failing with the block's number, its
// README line and the block as run; the last test checks that every block ran. The browser
// block (`connectWeb()`, the page's origin) runs on Node's fetch with `location.origin` the
// mesh's dashboard address (TICKMESH_WEB), which serves gRPC-Web.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";

import { peerAddresses } from "@tickmesh/client/node";


const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), ".."); // dist-test/..
const ROOT = resolve(PACKAGE, "..", "..");
const README = join(PACKAGE, "README.md");

// The addresses the README uses (tickmesh up's defaults), by the variable giving the live one.
const ADDRESSES: Record<string, string> = {
  "127.0.0.1:7404": "TICKMESH_QUERY",
  "127.0.0.1:7401": "TICKMESH_INGESTION",
  "127.0.0.1:7402": "TICKMESH_COMPUTATION",
};
// Data files the README names as if in the working directory, by the variable giving the path.
const FILES: Record<string, string> = { "GOOG.csv": "GOOG_CSV" };
// Anything that looks like a host:port, so that an address not in ADDRESSES is caught.
const ADDRESS = /\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\]):\d{1,5}\b/g;
// A string literal that names a file (by its extension): it must be in FILES or exist.
const FILE_LITERAL = /(["'`])([^"'`\n]+\.(?:csv|json|ya?ml|parquet|txt|db|feather))\1/g;
// A block running longer than this is stuck (a stream without a break, a server not
// answering); generous for a loaded 2-core CI box, where the slowest block takes a few seconds.
const BLOCK_MS = 60_000;
// Fences of code this test would not run: a block labelled so would be left out unnoticed.
const OTHER_SCRIPT_INFO = new Set(["typescript", "tsx", "js", "javascript", "mjs", "jsx"]);

interface Block {
  /** 1-based among the README's ts blocks (0 for other fences). */
  number: number;
  /** README line of the block's first code line (1-based). */
  line: number;
  info: string;
  code: string;
}

function fencedBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split("\n");
  let ts = 0;
  for (let i = 0; i < lines.length; i++) {
    const opening = /^```(.*)$/.exec(lines[i]!);
    if (opening === null) continue;
    const info = opening[1]!.trim();
    let end = i + 1;
    while (end < lines.length && lines[end]!.trimEnd() !== "```") end++;
    if (end === lines.length) throw new Error(`${README}:${i + 1}: the fence opened here is never closed`);
    const isTs = info.split(" ")[0] === "ts";
    if (isTs) ts++;
    blocks.push({ number: isTs ? ts : 0, line: i + 2, info, code: lines.slice(i + 1, end).join("\n") });
    i = end;
  }
  return blocks;
}

const ALL_BLOCKS = fencedBlocks(readFileSync(README, "utf8"));
const BLOCKS = ALL_BLOCKS.filter((b) => b.number > 0);

function where(block: Block): string {
  return `README block ${block.number} (README.md line ${block.line})`;
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: this test runs the README against a live mesh; ` +
        "services/tickmesh/tests/it/sdk_typescript.rs sets TICKMESH_QUERY, TICKMESH_INGESTION, " +
        "TICKMESH_COMPUTATION and GOOG_CSV (see the README's Tests section to run it by hand)",
    );
  }
  return value;
}

/** The live replacements of the README's addresses and files, checked. */
function replacements(): Map<string, string> {
  const live = new Map(Object.entries(ADDRESSES).map(([documented, name]) => [documented, env(name)]));
  const query = live.get("127.0.0.1:7404")!;
  const peers = [live.get("127.0.0.1:7401")!, live.get("127.0.0.1:7402")!];
  // The README's connect("127.0.0.1:7404") finds ingestion and computation by tickmesh up's
  // port layout (query - 3, query - 2); with the mesh on other ports those blocks would call
  // the wrong services, so say why instead of failing somewhere inside them.
  const derived = peerAddresses(query);
  if (derived.ingestion !== peers[0] || derived.computation !== peers[1]) {
    throw new Error(
      `the live mesh is not laid out as tickmesh up lays it out: query ${query}, ingestion / ` +
        `computation ${peers.join(", ")}, not ${derived.ingestion}, ${derived.computation}; ` +
        "start it with --base-port N (consecutive ports), not --base-port 0",
    );
  }
  for (const [documented, name] of Object.entries(FILES)) {
    const path = env(name);
    if (!existsSync(path)) throw new Error(`${name}=${path}: no such file`);
    live.set(documented, path);
  }
  return live;
}

/** The block's code with the documented addresses and files replaced by the live ones. */
function asRun(block: Block, live: Map<string, string>): string {
  const unknown = [...new Set(block.code.match(ADDRESS) ?? [])].filter((a) => !(a in ADDRESSES)).sort();
  if (unknown.length > 0) {
    throw new Error(
      `${where(block)} names ${unknown.join(", ")}: use one of ${Object.keys(ADDRESSES).join(", ")} ` +
        "(tickmesh up's defaults), or teach test/readme.test.ts the new address",
    );
  }
  let code = block.code.replace(ADDRESS, (address) => live.get(address)!);
  code = code.replace(FILE_LITERAL, (literal, _quote: string, name: string) => {
    if (name in FILES) return JSON.stringify(live.get(name)!);
    if (!existsSync(join(ROOT, name))) {
      throw new Error(
        `${where(block)} reads ${JSON.stringify(name)}, which is neither a data file this test ` +
          `provides (${Object.keys(FILES).join(", ")}) nor a path under the repository root`,
      );
    }
    return literal;
  });
  return code;
}

// -- one module of the blocks ------------------------------------------------------------------

interface Imports {
  /** Named specifiers ("connect", "type Bar", "a as b") by module, in order of appearance. */
  named: Map<string, string[]>;
  defaults: Map<string, string>;
  namespaces: Map<string, string>;
  sideEffects: Set<string>;
  /** Which module each local name comes from, to catch one name from two modules. */
  locals: Map<string, string>;
}

const IMPORT = /^import\s+(?:(type)\s+)?([\s\S]*?)\s*from\s*(["'])([^"']+)\3;?[ \t]*$/gm;
const SIDE_EFFECT_IMPORT = /^import\s*(["'])([^"']+)\1;?[ \t]*$/gm;

/** Takes the import declarations out of `code` (each replaced by as many empty lines, so the
 * block's other lines keep their README line numbers) into `imports`. */
function takeImports(block: Block, code: string, imports: Imports): string {
  const bind = (local: string, from: string) => {
    const other = imports.locals.get(local);
    if (other !== undefined && other !== from) {
      throw new Error(`${where(block)} imports ${local} from ${from}, an earlier block from ${other}: one name, one module`);
    }
    imports.locals.set(local, from);
  };
  const blank = (text: string) => text.replace(/[^\n]+/g, "");
  code = code.replace(IMPORT, (declaration, typeOnly: string | undefined, clause: string, _q: string, from: string) => {
    let rest = clause.trim();
    const braces = /\{([\s\S]*)\}/.exec(rest);
    if (braces !== null) {
      const list = imports.named.get(from) ?? [];
      for (const raw of braces[1]!.split(",")) {
        const item = raw.trim().replace(/\s+/g, " ");
        if (!item) continue;
        const specifier = typeOnly && !item.startsWith("type ") ? `type ${item}` : item;
        bind(specifier.replace(/^type /, "").split(" as ").at(-1)!, from);
        // A name imported as a value and as a type: the value import covers both.
        const name = specifier.replace(/^type /, "");
        if (list.includes(name) || list.includes(specifier)) continue;
        const asType = list.indexOf(`type ${name}`);
        if (asType >= 0 && !specifier.startsWith("type ")) list[asType] = name;
        else list.push(specifier);
      }
      imports.named.set(from, list);
      rest = rest.replace(braces[0], "").replace(/,\s*$/, "").replace(/^\s*,/, "").trim();
    }
    const namespace = /^\*\s+as\s+(\w+)$/.exec(rest);
    if (namespace !== null) {
      bind(namespace[1]!, from);
      imports.namespaces.set(from, namespace[1]!);
    } else if (/^\w+$/.test(rest)) {
      bind(rest, from);
      imports.defaults.set(from, rest);
    } else if (rest !== "") {
      throw new Error(`${where(block)}: cannot read the import ${JSON.stringify(declaration)}`);
    }
    return blank(declaration);
  });
  return code.replace(SIDE_EFFECT_IMPORT, (declaration, _q: string, from: string) => {
    imports.sideEffects.add(from);
    return blank(declaration);
  });
}

function importLines(imports: Imports): string[] {
  const modules = [...new Set([...imports.sideEffects, ...imports.defaults.keys(), ...imports.namespaces.keys(), ...imports.named.keys()])];
  const lines: string[] = [];
  for (const from of modules) {
    const spec = JSON.stringify(from);
    const named = imports.named.get(from) ?? [];
    const def = imports.defaults.get(from);
    const namespace = imports.namespaces.get(from);
    if (def !== undefined) lines.push(`import ${def} from ${spec};`);
    if (namespace !== undefined) lines.push(`import * as ${namespace} from ${spec};`);
    if (named.length > 0) lines.push(`import { ${named.join(", ")} } from ${spec};`);
    if (def === undefined && namespace === undefined && named.length === 0) lines.push(`import ${spec};`);
  }
  return lines;
}

const HOOK = "__tickmeshReadme";

interface Module {
  source: string;
  /** For each line of `source` (0-based), the block and README line it comes from. */
  origin: ({ block: Block; line: number } | undefined)[];
  /** Each block as run, by number. */
  asRun: Map<number, string>;
}

function readmeModule(live: Map<string, string>): Module {
  const imports: Imports = { named: new Map(), defaults: new Map(), namespaces: new Map(), sideEffects: new Set(), locals: new Map() };
  const bodies = BLOCKS.map((block) => {
    const code = asRun(block, live);
    return { block, code, body: takeImports(block, code, imports) };
  });
  const head = [
    "// Generated by test/readme.test.ts from README.md's ts blocks: do not edit.",
    ...importLines(imports),
    `const ${HOOK} = (globalThis as unknown as { ${HOOK}: { enter(block: number): void } }).${HOOK};`,
  ];
  const source = [...head];
  const origin: Module["origin"] = head.map(() => undefined);
  for (const { block, body } of bodies) {
    source.push(`// --- README block ${block.number}, README.md line ${block.line}`, `${HOOK}.enter(${block.number});`);
    origin.push(undefined, undefined);
    body.split("\n").forEach((text, i) => {
      source.push(text);
      origin.push({ block, line: block.line + i });
    });
  }
  source.push(`${HOOK}.enter(${BLOCKS.length + 1});`, "");
  return { source: source.join("\n"), origin, asRun: new Map(bodies.map((b) => [b.block.number, b.code])) };
}

/** `readme.ts:LINE:COL` / `readme.ts(LINE,COL)` in tsc's or a stack's text, as README lines. */
function inReadme(text: string, module: Module): string {
  return text.replace(/(?:[^\s(]*[/\\])?readme\.ts(?::(\d+):(\d+)|\((\d+),(\d+)\))/g, (match, l1?: string, c1?: string, l2?: string, c2?: string) => {
    const at = module.origin[Number(l1 ?? l2) - 1];
    return at === undefined ? match : `README.md:${at.line}:${c1 ?? c2} (block ${at.block.number})`;
  });
}

/** Writes the module into `dir` and type-checks / compiles it with the package's tsc. */
function compile(dir: string, module: Module): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "readme.ts"), module.source);
  const tsconfig = {
    extends: "../../tsconfig.json",
    compilerOptions: { rootDir: ".", outDir: "out", declaration: false, sourceMap: true, noUnusedLocals: false },
    include: ["readme.ts"],
  };
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2));
  const tsc = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
  const result = spawnSync(process.execPath, [tsc, "-p", dir, "--pretty", "false"], { encoding: "utf8" });
  if (result.status !== 0) {
    const diagnostics = inReadme(`${result.stdout}${result.stderr}`.trim(), module);
    const blocks = [...new Set([...diagnostics.matchAll(/\(block (\d+)\)/g)].map((m) => m[1]))];
    throw new Error(
      `the README's ts blocks do not type-check (block ${blocks.join(", ") || "?"}; ` +
        `tsc -p ${join(dir, "tsconfig.json")}):\n${diagnostics}`,
    );
  }
  return join(dir, "out", "readme.js");
}

// -- the tests -----------------------------------------------------------------------------------

test("every fenced block of the README says its language, and the ts ones are ```ts", () => {
  const unlabelled = ALL_BLOCKS.filter((b) => !b.info).map((b) => b.line - 1);
  assert.deepEqual(unlabelled, [], `${README}: fenced blocks without a language at lines ${unlabelled.join(", ")}`);
  const other = ALL_BLOCKS.filter((b) => OTHER_SCRIPT_INFO.has(b.info.split(" ")[0]!.toLowerCase())).map((b) => `${b.line - 1} (${b.info})`);
  assert.deepEqual(other, [], `${README}: script blocks this test would not run, at lines ${other.join(", ")}: label them ts`);
  assert.ok(BLOCKS.length > 0, `${README} has no \`\`\`ts block`);
});

const ran: number[] = [];

describe("README.md's ts blocks, in order, against tickmesh up", () => {
  const dir = join(PACKAGE, "dist-test", `readme-${process.pid}`);
  let module: Module | undefined;
  const cwd = process.cwd();
  // Progress of the module's evaluation, as its hook calls and its promise tell it.
  let started = 0;
  let settled = false;
  let failure: { block: number; error: unknown } | undefined;
  const waiters = new Set<() => void>();
  const notify = () => waiters.forEach((wake) => wake());

  before(async () => {
    const live = replacements();
    module = readmeModule(live);
    const compiled = compile(dir, module);
    // What a page that the dashboard's address serves sees as its origin: the mesh's own
    // gRPC-Web endpoint (TICKMESH_WEB, the `web` address of its ready file).
    const web = process.env.TICKMESH_WEB;
    if (!web) throw new Error("TICKMESH_WEB (the dashboard's address, gRPC-Web) is not set: run this through cargo test (sdk_typescript)");
    const origin = `http://${web}`;
    Object.defineProperty(globalThis, "location", { value: { origin }, configurable: true, writable: true });
    (globalThis as Record<string, unknown>)[HOOK] = {
      enter(block: number) {
        started = block;
        notify();
      },
    };
    process.setSourceMapsEnabled(true);
    // Paths in the blocks other than GOOG.csv are relative to the repository root.
    process.chdir(ROOT);
    import(pathToFileURL(compiled).href).then(
      () => {
        settled = true;
        notify();
      },
      (error: unknown) => {
        settled = true;
        // Failing before block 1 started: its imports (a module that does not resolve).
        failure ??= { block: Math.max(started, 1), error };
        notify();
      },
    );
  });

  after(async () => {
    process.chdir(cwd);
    if (settled && failure === undefined) {
      rmSync(dir, { recursive: true, force: true });
    } else {
      console.log(`the README module as run is kept in ${dir}`);
    }
    // A block that failed or hung leaves the README's client (its HTTP/2 connections) or a
    // stream open, which would keep this process from ever exiting: end it once the report is
    // out. After a clean run nothing is left, and this timer does not hold the process.
    setTimeout(() => process.exit(), 2000).unref();
  });

  for (const block of BLOCKS) {
    test(`block ${String(block.number).padStart(2, "0")}, README.md line ${block.line}`, async () => {
      assert.ok(module !== undefined, "the README module was not built");
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          failure ??= { block: block.number, error: new Error(`still running after ${BLOCK_MS / 1000} s (a stream without a break? a call that hangs?)`) };
          check();
        }, BLOCK_MS);
        function check() {
          let outcome: Error | undefined | "done";
          if (failure !== undefined && failure.block < block.number) {
            outcome = new Error(`${where(block)} not run: block ${failure.block} before it failed, and the blocks build on each other`);
          } else if (failure !== undefined && failure.block === block.number) {
            const error = failure.error;
            const text = error instanceof Error ? (error.stack ?? String(error)) : String(error);
            outcome = new Error(`${where(block)} failed: ${inReadme(text, module!)}\n--- the block as run:\n${module!.asRun.get(block.number)}`);
          } else if (started > block.number || (settled && failure === undefined)) {
            outcome = "done";
          }
          if (outcome === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          if (outcome === "done") resolve();
          else reject(outcome);
        }
        waiters.add(check);
        check();
      });
      ran.push(block.number);
    });
  }
});

test("every ts block of the README ran", () => {
  assert.ok(BLOCKS.length > 0);
  assert.deepEqual(ran, BLOCKS.map((b) => b.number), `${BLOCKS.length} ts blocks in ${README}, ran ${ran.join(", ")}`);
});
