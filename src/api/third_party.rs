//! Typed views of the third-party resources the operator reads and writes.
//!
//! Only the fields the operator uses are typed; the rest of each object passes through as JSON
//! so nothing a user or another controller set is lost on a round trip.

/// `apiVersion` of a typed resource, for serde defaults and `Default` impls.
pub(crate) fn api_version<T: k8s_openapi::Resource>() -> String {
    T::API_VERSION.to_owned()
}

/// `kind` of a typed resource, likewise.
pub(crate) fn kind<T: k8s_openapi::Resource>() -> String {
    T::KIND.to_owned()
}

/// Implements `k8s_openapi::Resource` and `Metadata` for a namespaced custom resource type, so it
/// works with `kube::Api` like a built-in kind.
macro_rules! namespaced_resource {
    ($ty:ty, group = $group:literal, version = $version:literal, kind = $kind:literal, plural = $plural:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use namespaced_resource;
