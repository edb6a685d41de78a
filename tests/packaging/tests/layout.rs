//! The operator's source stays readable: no file under `src/` grows past 500 lines (issue 8's
//! bar). A file that does has more than one concern; split it along them.

use std::path::Path;

use packaging_tests::repo_root;

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn no_source_file_is_longer_than_500_lines() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("src"), &mut files).unwrap();
    assert!(files.len() > 10, "found only {files:?} under src/");
    let too_long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(too_long.is_empty(), "split these by concern: {too_long:?}");
}
