use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data folder {path} does not exist or is not a folder")]
    MissingDataDir { path: PathBuf },

    #[error("reading data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Model(#[from] shoal_operators::Error),

    #[error("training model '{model}': {message}")]
    Training { model: String, message: String },

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}
