fn main() {
    eprintln!("{}: the handler is not implemented yet", query::NAME);
    std::process::exit(1);
}
