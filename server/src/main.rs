//! `nib`: a language server that runs a code model in-process for inline completions,
//! docstrings and unit tests. This file is the command line; `ARCHITECTURE.md` maps the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nib::{cli, config, engine, lsp, position};

#[derive(Parser)]
#[command(name = "nib", version, about = "Local AI code assistance over LSP, with the model running in-process")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Model directory (default: the model installed by `make setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// libonnxruntime.so to load (default: search ORT_DYLIB_PATH and Python installations).
    #[arg(long)]
    onnx_runtime: Option<PathBuf>,
    /// Inference threads (default: one per physical core).
    #[arg(long)]
    threads: Option<usize>,
    /// Generate on an OpenAI-compatible completions server instead, e.g. http://gpu-box:8000/v1.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// The model name to request from the --remote server (default: the one it serves).
    #[arg(long, requires = "remote")]
    remote_model: Option<String>,
    /// Environment variable holding the --remote server's API key.
    #[arg(long, requires = "remote", value_name = "VARIABLE")]
    remote_api_key_env: Option<String>,
}

impl ModelArgs {
    fn settings(&self) -> engine::EngineSettings {
        engine::EngineSettings {
            model_dir: self.model.clone(),
            onnx_runtime_path: self.onnx_runtime.clone(),
            threads: self.threads.unwrap_or_else(engine::physical_cores),
            remote: self.remote.as_ref().map(|url| {
                engine::RemoteSettings::from_config(&config::RemoteConfig {
                    url: url.trim_end_matches('/').to_string(),
                    model: self.remote_model.clone().unwrap_or_default(),
                    api_key_env: self.remote_api_key_env.clone().unwrap_or_default(),
                    ..config::RemoteConfig::default()
                })
            }),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Speak LSP over stdin/stdout (the default when no command is given).
    Serve {
        /// Use stdin/stdout (the only transport; accepted for compatibility with editor configs).
        #[arg(long)]
        stdio: bool,
    },
    /// Print the raw continuation of a prompt.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Sampling temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the text as it is generated, then timing statistics on stderr.
        #[arg(long)]
        stream: bool,
    },
    /// Print the inline completion for a cursor in a file: the same pipeline as the server.
    Complete {
        #[command(flatten)]
        model: ModelArgs,
        /// The source file.
        #[arg(long)]
        file: PathBuf,
        /// Zero-based line of the cursor.
        #[arg(long)]
        line: u32,
        /// Zero-based column of the cursor, in UTF-16 code units as in LSP.
        #[arg(long)]
        character: u32,
        /// Upper bound on generated tokens (default: the `completion.maxTokens` setting's default).
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Print JSON with the prompt, the raw generation and timings.
        #[arg(long)]
        json: bool,
        /// Another file to treat as an open buffer (repeatable), for cross-file context.
        #[arg(long)]
        open: Vec<PathBuf>,
        /// Index this folder as the workspace and take context from it, as the server does with
        /// `nib.context.workspace` (instead of the open buffers).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
    },
    /// Index a folder as the server's workspace index would and report what it holds, how long
    /// it took, its memory and the time of retrievals (JSON).
    Index {
        folder: PathBuf,
        /// Retrievals to time, at the middle of files spread over the index.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Index at most this many files (`nib.context.maxFiles`).
        #[arg(long, value_name = "N")]
        max_files: Option<usize>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

fn main() -> ExitCode {
    engine::allocator::restart_with_huge_pages();
    engine::allocator::tune_for_inference();
    let cli = Cli::parse();
    init_logging();
    match cli.command.unwrap_or(Command::Serve { stdio: true }) {
        Command::Serve { .. } => {
            let stdin = std::io::BufReader::new(std::io::stdin());
            let code = lsp::server::run(stdin, std::io::stdout());
            ExitCode::from(code as u8)
        }
        Command::Generate { model, prompt, max_tokens, temperature, top_p, seed, stream } => {
            let sampling = engine::Sampling { temperature, top_p, seed };
            report(cli::generate(&model.settings(), prompt, max_tokens, sampling, stream))
        }
        Command::Complete { model, file, line, character, max_tokens, json, open, workspace } => {
            let position = position::LineColumn { line, column: character };
            let sources = cli::ContextSources { open, workspace };
            report(cli::complete(&model.settings(), &file, position, max_tokens, &sources, json))
        }
        Command::Index { folder, queries, max_files } => report(cli::index(&folder, queries, max_files)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nib: {error:#}");
            ExitCode::FAILURE
        }
    }
}
