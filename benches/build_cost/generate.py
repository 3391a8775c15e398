"""Writes two crates with the same 20 projections of 10 handlers each: one declared with
`#[projection]`, one written by hand against the `Projection` trait. See run.sh."""

import pathlib
import sys

PROJECTIONS = 20
HANDLERS = 10

root = pathlib.Path(sys.argv[1])
projections_path = pathlib.Path(sys.argv[2]).resolve()


def manifest(name: str) -> str:
    return f"""[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
projections = {{ path = "{projections_path}" }}
serde = {{ version = "1", features = ["derive"] }}
"""


def events() -> str:
    out = ["use projections::Event;", "use serde::{Deserialize, Serialize};", ""]
    for p in range(PROJECTIONS):
        for h in range(HANDLERS):
            out.append(
                f"#[derive(Debug, Clone, Serialize, Deserialize, Event)]\n"
                f'#[event(aggregate = "A{p}")]\n'
                f"pub struct E{p}x{h} {{ pub amount: i64 }}\n"
            )
    return "\n".join(out)


def with_macro() -> str:
    out = ["mod events;", "use events::*;", "use projections::{Envelope, projection};", ""]
    for p in range(PROJECTIONS):
        out.append(f"#[derive(Default)]\npub struct P{p} {{ pub total: i64 }}\n")
        out.append(f'#[projection(name = "p{p}")]\nimpl P{p} {{')
        for h in range(HANDLERS):
            out.append(f"    #[handles(E{p}x{h})]")
            out.append(
                f"    async fn on_{h}(&mut self, event: &Envelope<E{p}x{h}>) {{ self.total += event.amount; }}"
            )
        out.append("    #[reset]\n    async fn clear(&mut self) { self.total = 0; }")
        out.append("}\n")
    return "\n".join(out)


def by_hand() -> str:
    out = [
        "mod events;",
        "use events::*;",
        "use projections::{AnyEvent, Envelope, Event, HandlerError, Projection};",
        "",
    ]
    for p in range(PROJECTIONS):
        names = ", ".join(f"E{p}x{h}::EVENT_TYPE" for h in range(HANDLERS))
        out.append(f"#[derive(Default)]\npub struct P{p} {{ pub total: i64 }}\n")
        out.append(f"impl P{p} {{")
        for h in range(HANDLERS):
            out.append(
                f"    async fn on_{h}(&mut self, event: &Envelope<E{p}x{h}>) {{ self.total += event.amount; }}"
            )
        out.append("}\n")
        out.append(f"impl Projection for P{p} {{")
        out.append(f'    fn name(&self) -> &str {{ "p{p}" }}')
        out.append(f"    fn subscribed_to(&self) -> &[&'static str] {{ const {{ &[{names}] }} }}")
        out.append(
            "    fn handle(&mut self, event: &AnyEvent) -> impl Future<Output = Result<(), HandlerError>> + Send {"
        )
        out.append("        let event = event.clone();")
        out.append("        async move {")
        for h in range(HANDLERS):
            out.append(
                f"            if let Some(e) = event.downcast::<E{p}x{h}>() {{ self.on_{h}(e).await; return Ok(()); }}"
            )
        out.append("            Ok(())")
        out.append("        }")
        out.append("    }")
        out.append(
            "    fn reset(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {"
        )
        out.append("        async move { self.total = 0; Ok(()) }")
        out.append("    }")
        out.append("}\n")
    return "\n".join(out)


(root / "Cargo.toml").write_text('[workspace]\nmembers = ["with_macro", "by_hand"]\nresolver = "3"\n')
for name, body in (("with_macro", with_macro()), ("by_hand", by_hand())):
    src = root / name / "src"
    src.mkdir(parents=True, exist_ok=True)
    (root / name / "Cargo.toml").write_text(manifest(name))
    (src / "lib.rs").write_text(body)
    (src / "events.rs").write_text(events())
