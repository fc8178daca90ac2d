fn main() -> std::process::ExitCode {
    pipeline_cli::main()
}
