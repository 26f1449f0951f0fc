pub const NOTES: &str = "";
pub fn pairs() -> Vec<crate::report::Row> {
    Vec::new()
}
