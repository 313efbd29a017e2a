//! The type-check of the npm package in `web/pkg` (issue 14, item 4).
//!
//! node-wasm/types-test/example.ts uses every call, result, event and error code of the JS API;
//! its `// @ts-expect-error` lines must be errors, so types that lose precision fail. Two checks:
//!
//! 1. The package as built: `web/pkg`'s `package.json` and declarations are installed as
//!    `node_modules/chord-kv` of a scratch project (so `exports`/`types` resolution is what a
//!    user's bundler does) and `tsc --strict` must pass.
//! 2. Mutants: copies of `node_wasm.d.ts` in which one documented type is replaced by `any`
//!    (each type and interface of node-wasm/js/types.d.ts, and each `ChordPeer` method's result
//!    or typed parameter). Every copy must make example.ts fail, with no error in the
//!    declarations themselves; a copy that passes names a type example.ts does not check. All
//!    mutants are one tsc program (one `example.ts` copy per mutant), so this costs one run.
//!
//! TypeScript is npm's, pinned by node-wasm/types-test/package-lock.json and installed with
//! `npm ci` into its gitignored `node_modules`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cargo_target_dir, project_root, step};

/// The methods of `ChordPeer` whose results, and the parameters whose types, the API documents.
const RESULTS: &[&str] = &[
    "start",
    "put",
    "delete",
    "get",
    "flood",
    "lookup",
    "ring",
    "walk",
    "metrics",
    "localKeys",
    "keyId",
    "unwatch",
];
const PARAMS: &[(&str, &str)] = &[
    ("start", "options"),
    ("onEvent", "callback"),
    ("put", "value"),
    ("watch", "callback"),
];

pub(crate) fn check() -> anyhow::Result<()> {
    let root = project_root();
    let test_dir = root.join("node-wasm/types-test");
    step("types: npm ci (typescript, pinned)", || {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(&test_dir))
    })?;
    let tsc = test_dir.join("node_modules/typescript/bin/tsc");
    let pkg = root.join("web/pkg");
    let declarations = fs::read_to_string(pkg.join("node_wasm.d.ts"))
        .context("web/pkg/node_wasm.d.ts is missing; run `cargo xtask wasm`")?;
    let example = fs::read_to_string(test_dir.join("example.ts")).context("reading example.ts")?;
    let tsconfig = fs::read_to_string(test_dir.join("tsconfig.json"))?;
    let scratch = cargo_target_dir().join("types-check");

    step("types: tsc --strict example.ts against web/pkg", || {
        let dir = fresh_dir(&scratch.join("package"))?;
        let installed = dir.join("node_modules/chord-kv");
        fs::create_dir_all(&installed)?;
        for file in [
            "package.json",
            "node_wasm.d.ts",
            "node_wasm_bg.wasm.d.ts",
            "node_wasm.js",
        ] {
            fs::copy(pkg.join(file), installed.join(file))
                .with_context(|| format!("copying web/pkg/{file}"))?;
        }
        fs::write(dir.join("example.ts"), &example)?;
        fs::write(dir.join("tsconfig.json"), &tsconfig)?;
        let (ok, output) = tsc_run(&tsc, &dir)?;
        if !ok {
            bail!("example.ts does not type-check against web/pkg:\n{output}");
        }
        Ok(())
    })?;

    step(
        "types: every documented type replaced by `any` fails",
        || {
            let mutants = mutants(&declarations)?;
            let dir = fresh_dir(&scratch.join("mutants"))?;
            let rewritten = example.replace("from 'chord-kv'", "from './node_wasm.js'");
            if rewritten == example {
                bail!("example.ts does not import from 'chord-kv'");
            }
            for (i, (_, text)) in mutants.iter().enumerate() {
                let sub = dir.join(format!("m{i}"));
                fs::create_dir_all(&sub)?;
                fs::write(sub.join("node_wasm.d.ts"), text)?;
                fs::copy(
                    pkg.join("node_wasm_bg.wasm.d.ts"),
                    sub.join("node_wasm_bg.wasm.d.ts"),
                )?;
                fs::write(sub.join("example.ts"), &rewritten)?;
            }
            let files: Vec<String> = (0..mutants.len())
                .map(|i| format!("\"m{i}/example.ts\""))
                .collect();
            let config = tsconfig.replace("[\"example.ts\"]", &format!("[{}]", files.join(", ")));
            fs::write(dir.join("tsconfig.json"), config)?;
            let (ok, output) = tsc_run(&tsc, &dir)?;
            if ok {
                bail!("no mutant failed the type-check: is example.ts checked at all?");
            }
            let mut failures: BTreeMap<usize, usize> = BTreeMap::new();
            for line in output.lines() {
                let Some((file, _)) = line.split_once('(') else {
                    continue;
                };
                let Some(i) = file
                    .strip_prefix('m')
                    .and_then(|rest| rest.strip_suffix("/example.ts"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    if line.contains("error TS") {
                        bail!("a mutant's declarations do not compile: {line}");
                    }
                    continue;
                };
                *failures.entry(i).or_default() += 1;
            }
            let survivors: Vec<&str> = mutants
                .iter()
                .enumerate()
                .filter(|(i, _)| !failures.contains_key(i))
                .map(|(_, (name, _))| name.as_str())
                .collect();
            if !survivors.is_empty() {
                bail!(
                    "example.ts still type-checks when these are `any`: {} (add a \
                 `// @ts-expect-error` line that only fails while the type is precise)",
                    survivors.join(", ")
                );
            }
            println!(
                "types: all {} mutants fail the type-check ({} errors)",
                mutants.len(),
                failures.values().sum::<usize>()
            );
            Ok(())
        },
    )
}

/// The mutants of `declarations`: (what was replaced, the mutated text).
fn mutants(declarations: &str) -> anyhow::Result<Vec<(String, String)>> {
    let custom = include_str!("../../node-wasm/js/types.d.ts");
    let mut out = Vec::new();
    for line in custom.lines() {
        let name = line
            .strip_prefix("export type ")
            .or_else(|| line.strip_prefix("export interface "))
            .and_then(|rest| rest.split([' ', '<']).next());
        if let Some(name) = name {
            out.push((format!("type {name}"), any_type(declarations, name)?));
        }
    }
    for method in RESULTS {
        out.push((
            format!("{method}() result"),
            any_result(declarations, method)?,
        ));
    }
    for (method, param) in PARAMS {
        out.push((
            format!("{method}({param})"),
            any_param(declarations, method, param)?,
        ));
    }
    Ok(out)
}

/// `export type NAME = ...;` or `export interface NAME ... { ... }` becomes `NAME = any`.
fn any_type(text: &str, name: &str) -> anyhow::Result<String> {
    for (head, end) in [
        (format!("export type {name} ="), ";"),
        (format!("export interface {name} "), "\n}"),
        (format!("export interface {name}<"), "\n}"),
    ] {
        if let Some(start) = text.find(&head) {
            let len = text[start..]
                .find(end)
                .with_context(|| format!("{name} has no end"))?
                + end.len();
            let generics = if text[start..start + len].contains(&format!("{name}<C")) {
                "<C = any>"
            } else {
                ""
            };
            return Ok(format!(
                "{}export type {name}{generics} = any;{}",
                &text[..start],
                &text[start + len..]
            ));
        }
    }
    bail!("node_wasm.d.ts does not declare {name}")
}

/// The line of `ChordPeer`'s `method` in the declarations: (start offset, the line).
fn method_line<'a>(text: &'a str, method: &str) -> anyhow::Result<(usize, &'a str)> {
    let class = text
        .find("export class ChordPeer {")
        .context("no ChordPeer class")?;
    let mut offset = class;
    for line in text[class..].lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(&format!("{method}("))
            || trimmed.starts_with(&format!("static {method}("))
        {
            return Ok((offset, line));
        }
        if line == "}" {
            break;
        }
        offset += line.len() + 1;
    }
    bail!("ChordPeer has no method {method}")
}

fn any_result(text: &str, method: &str) -> anyhow::Result<String> {
    let (at, line) = method_line(text, method)?;
    let colon = line.rfind("): ").context("no result type")? + 3;
    let result = line[colon..].trim_end_matches(';');
    let any = if result.starts_with("Promise<") {
        "Promise<any>"
    } else {
        "any"
    };
    let mutated = format!("{}{any};", &line[..colon]);
    Ok(format!(
        "{}{mutated}{}",
        &text[..at],
        &text[at + line.len()..]
    ))
}

fn any_param(text: &str, method: &str, param: &str) -> anyhow::Result<String> {
    let (at, line) = method_line(text, method)?;
    let head = format!("{param}: ");
    let start = line.find(&head).context("no such parameter")? + head.len();
    let mut depth = 0i32;
    let mut end = line.len();
    for (i, c) in line[start..].char_indices() {
        match c {
            '(' | '<' | '{' | '[' => depth += 1,
            ')' | '>' | '}' | ']' if depth > 0 => depth -= 1,
            ')' | ',' if depth == 0 => {
                end = start + i;
                break;
            }
            _ => {}
        }
    }
    let mutated = format!("{}any{}", &line[..start], &line[end..]);
    Ok(format!(
        "{}{mutated}{}",
        &text[..at],
        &text[at + line.len()..]
    ))
}

fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// `tsc -p dir --strict --noEmit` in `dir`: (passed, output).
fn tsc_run(tsc: &Path, dir: &Path) -> anyhow::Result<(bool, String)> {
    let output = Command::new("node")
        .arg(tsc)
        .args([
            "-p",
            "tsconfig.json",
            "--strict",
            "--noEmit",
            "--pretty",
            "false",
        ])
        .current_dir(dir)
        .output()
        .context("cannot run node (Debian's nodejs; `cargo xtask setup` installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    Ok((output.status.success(), text))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
