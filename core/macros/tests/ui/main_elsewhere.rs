#[redwood::main]
fn start() {}

fn main() {}
