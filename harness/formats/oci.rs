//! Which platforms an image publishes, read from its registry manifest (OCI image index or Docker
//! manifest list), without pulling it.

use serde_json::Value;

/// Media types of multi-platform indexes.
pub const INDEX_MEDIA_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// A platform entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, … when given.
    pub variant: Option<String>,
}

/// What a manifest document says about platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestKind {
    /// An index or manifest list: the runnable platforms it lists (attestations and other
    /// `unknown/unknown` entries left out).
    Index(Vec<Platform>),
    /// A single-platform manifest; its platform is only in its config blob.
    Single,
}

/// Reads a manifest document. `None` when it is neither an index nor a manifest.
pub fn parse_manifest(doc: &Value) -> Option<ManifestKind> {
    let media = doc.get("mediaType").and_then(Value::as_str).unwrap_or_default();
    if let Some(list) = doc.get("manifests").and_then(Value::as_array) {
        if !media.is_empty() && !INDEX_MEDIA_TYPES.contains(&media) {
            return None;
        }
        let platforms = list
            .iter()
            .filter(|m| {
                m.pointer("/annotations/vnd.docker.reference.type").is_none()
                    && m.pointer("/platform/architecture").and_then(Value::as_str) != Some("unknown")
            })
            .filter_map(|m| {
                let p = m.get("platform")?;
                Some(Platform {
                    os: p.get("os")?.as_str()?.to_string(),
                    architecture: p.get("architecture")?.as_str()?.to_string(),
                    variant: p.get("variant").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect();
        return Some(ManifestKind::Index(platforms));
    }
    if doc.get("config").is_some() && doc.get("layers").is_some() {
        return Some(ManifestKind::Single);
    }
    None
}

/// Whether an index offers `linux/<arch>` (for arm64, variant `v8` or none).
pub fn supports(platforms: &[Platform], arch: &str) -> bool {
    platforms.iter().any(|p| {
        p.os == "linux" && p.architecture == arch && (arch != "arm64" || p.variant.as_deref().is_none_or(|v| v == "v8"))
    })
}

/// An image reference split into registry, repository and tag-or-digest, with Docker Hub's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, e.g. `registry-1.docker.io`.
    pub registry: String,
    /// Repository path, e.g. `library/nginx`.
    pub repository: String,
    /// Tag or `sha256:` digest.
    pub reference: String,
}

impl ImageRef {
    /// Parses `[registry/]repo[:tag][@digest]`. A digest wins over a tag.
    pub fn parse(image: &str) -> Option<ImageRef> {
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (image, None),
        };
        let (path, tag) = match name.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (name, None),
        };
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), path.to_string()),
        };
        let (registry, repository) = if registry == "docker.io" {
            let repo = if repository.contains('/') { repository } else { format!("library/{repository}") };
            ("registry-1.docker.io".to_string(), repo)
        } else {
            (registry, repository)
        };
        let reference = digest.or(tag).unwrap_or_else(|| "latest".to_string());
        if repository.is_empty() {
            return None;
        }
        Some(ImageRef { registry, repository, reference })
    }

    /// The registry URL of the manifest.
    pub fn manifest_url(&self) -> String {
        format!("https://{}/v2/{}/manifests/{}", self.registry, self.repository, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_follow_docker_defaults() {
        let r = ImageRef::parse("curlimages/curl:8.17.0").unwrap();
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(r.repository, "curlimages/curl");
        let r = ImageRef::parse("kindest/node:v1.35.0@sha256:abc").unwrap();
        assert_eq!(r.reference, "sha256:abc");
        let r = ImageRef::parse("quay.io/cilium/cilium:v1.19.6").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("quay.io", "cilium/cilium"));
        assert_eq!(ImageRef::parse("busybox").unwrap().repository, "library/busybox");
    }
}
