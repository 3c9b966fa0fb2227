fn main() {
    println!("rill-bench: not yet built (issue 7)");
}
