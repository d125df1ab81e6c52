//! `sqlx::migrate!()` embeds `migrations/` at compile time, but cargo does not know the macro
//! read those files: without this a new migration would not trigger a rebuild.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
