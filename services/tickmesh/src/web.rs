//! The dashboard's files, embedded at build time from `web/dist` (see build.rs).

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
