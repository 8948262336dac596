//! Example lifecycle hook (warren:plugin@0.2.0). Logs every event through the host with the
//! service's package ident, the member running it and its data directory, and reads three
//! top-level keys of the service's config TOML:
//! * `fail_init = true`   → `init` fails;
//! * `fail_health = true` → `health-check` answers `critical` (else `ok`);
//! * `suitability = N`    → `suitability` answers N (default 0).

wit_bindgen::generate!({ path: "../../wit", world: "lifecycle-hook" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::lifecycle::{Guest, Health, ServiceContext};
use warren::plugin::host::{Level, log};
use warren_plugin_guest::{config_bool, config_u64};

struct HookExample;

fn event(name: &str, ctx: &ServiceContext, extra: &[(String, String)]) {
    let id = &ctx.ident;
    let mut fields = vec![
        ("event".to_string(), name.to_string()),
        ("service".to_string(), ctx.service.clone()),
        ("group".to_string(), ctx.group.clone()),
        ("ident".to_string(), format!("{}/{}/{}/{}", id.origin, id.name, id.version, id.release)),
        ("member_id".to_string(), ctx.member_id.clone()),
        ("data".to_string(), ctx.paths.data.clone()),
    ];
    fields.extend_from_slice(extra);
    log(Level::Info, &format!("{name} {}.{}", ctx.service, ctx.group), &fields);
}

impl Guest for HookExample {
    fn init(ctx: ServiceContext) -> Result<(), String> {
        event("init", &ctx, &[]);
        if config_bool(&ctx.config_toml, "fail_init") {
            return Err(format!("init refused for {}: fail_init = true", ctx.service));
        }
        Ok(())
    }

    fn health_check(ctx: ServiceContext) -> Health {
        let health = if config_bool(&ctx.config_toml, "fail_health") { Health::Critical } else { Health::Ok };
        let label = if health == Health::Ok { "ok" } else { "critical" };
        event("health-check", &ctx, &[("health".into(), label.into())]);
        health
    }

    fn reconfigure(ctx: ServiceContext) -> Result<(), String> {
        event("reconfigure", &ctx, &[]);
        Ok(())
    }

    fn suitability(ctx: ServiceContext) -> u64 {
        let n = config_u64(&ctx.config_toml, "suitability").unwrap_or(0);
        event("suitability", &ctx, &[("suitability".into(), n.to_string())]);
        n
    }

    fn file_updated(ctx: ServiceContext, file_name: String) -> Result<(), String> {
        event("file-updated", &ctx, &[("file".into(), file_name)]);
        Ok(())
    }

    fn post_stop(ctx: ServiceContext) -> Result<(), String> {
        event("post-stop", &ctx, &[]);
        Ok(())
    }
}

export!(HookExample);
