fn main() {
    eprintln!("{}: the handler is not implemented yet", ingest::NAME);
    std::process::exit(1);
}
