//! Watched objects decoded without their managedFields.
//!
//! Every object the API server sends carries `metadata.managedFields`, often larger than the
//! rest of the object, and no reconcile reads them (the caches drop them). Decoded, each entry's
//! `fieldsV1` is a tree of JSON maps: at a restart over 10,000 accesses that was about a quarter
//! of the operator's CPU before it was ready. A watch of [`Lean<K>`] skips them unparsed.

use std::borrow::Cow;
use std::fmt;

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::{Config, Error as WatchError, Event};
use kube::{Api, Resource};
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, Serialize};

/// `K` as watched: decoded without `metadata.managedFields`.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Lean<K>(pub K);

impl<K: Resource> Resource for Lean<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    // PartialObjectMeta asks the server for metadata only.
    fn metadata_api() -> bool {
        K::metadata_api()
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(Object(deserializer)).map(Lean)
    }
}

/// A watch of `api`'s objects, each decoded without its managedFields.
pub fn watcher<K>(
    api: Api<Lean<K>>,
    config: Config,
) -> impl Stream<Item = Result<Event<K>, WatchError>> + Send + 'static
where
    K: Resource + Clone + de::DeserializeOwned + fmt::Debug + Send + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    kube::runtime::watcher::watcher(api, config).map_ok(|event| match event {
        Event::Apply(Lean(object)) => Event::Apply(object),
        Event::Delete(Lean(object)) => Event::Delete(object),
        Event::Init => Event::Init,
        Event::InitApply(Lean(object)) => Event::InitApply(object),
        Event::InitDone => Event::InitDone,
    })
}

/// Forwards the listed `deserialize_*` methods, which take only a visitor, to `self.0`.
macro_rules! forward_visitor_only {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(visitor)
        }
    )*};
}

/// Forwards to `self.0`, unchanged, every `deserialize_*` a wrapper does not read itself: the
/// listed ones, the scalars and sequences, and those that take a name or a length.
macro_rules! forward_deserialize {
    ($($method:ident)*) => {
        forward_visitor_only! {
            $($method)*
            deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
            deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
            deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
            deserialize_byte_buf deserialize_unit deserialize_seq deserialize_identifier
            deserialize_ignored_any deserialize_i128 deserialize_u128
        }
        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_unit_struct(name, visitor)
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_newtype_struct(name, visitor)
        }
        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple(len, visitor)
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple_struct(name, len, visitor)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_enum(name, variants, visitor)
        }
        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    };
}

/// Forwards every `visit_*` of a visitor wrapper to `self.0`, but `visit_map` and `visit_some`.
macro_rules! forward_visits {
    ($($method:ident: $ty:ty)*) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            self.0.expecting(f)
        }
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        })*
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            self.0.visit_borrowed_str(v)
        }
        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
            self.0.visit_borrowed_bytes(v)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_none()
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_unit()
        }
        fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            self.0.visit_newtype_struct(d)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            self.0.visit_seq(seq)
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.0.visit_enum(data)
        }
    };
}

/// The object: each of its fields is read through [`Field`].
struct Object<D>(D);
/// One top-level field: an `ObjectMeta` in it is read through [`WithoutManagedFields`].
struct Field<D>(D);

/// Wraps a visitor: `Object`'s so that its map's values are `Field`s, a `Field`'s so that an
/// `ObjectMeta` map skips its managedFields, or (typed objects read `metadata` as an option)
/// so that the value of an option is a `Field` too.
struct Wrapped<V, const READS: u8>(V);

const OBJECT: u8 = 0;
const META: u8 = 1;
const OPTION: u8 = 2;

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Object<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Wrapped::<V, OBJECT>(visitor))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrapped::<V, OBJECT>(visitor))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_struct(name, fields, Wrapped::<V, OBJECT>(visitor))
    }
    forward_deserialize! { deserialize_option }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Field<D> {
    type Error = D::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        if name == "ObjectMeta" {
            self.0
                .deserialize_struct(name, fields, Wrapped::<V, META>(visitor))
        } else {
            self.0.deserialize_struct(name, fields, visitor)
        }
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_option(Wrapped::<V, OPTION>(visitor))
    }
    forward_deserialize! { deserialize_any deserialize_map }
}

impl<'de, V: Visitor<'de>, const READS: u8> Visitor<'de> for Wrapped<V, READS> {
    type Value = V::Value;

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        match READS {
            OBJECT => self.0.visit_map(Fields(map)),
            META => self.0.visit_map(WithoutManagedFields(map)),
            _ => self.0.visit_map(map),
        }
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        if READS == OPTION {
            self.0.visit_some(Field(d))
        } else {
            self.0.visit_some(d)
        }
    }

    forward_visits! {
        visit_bool: bool visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64
        visit_i128: i128 visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64
        visit_u128: u128 visit_f32: f32 visit_f64: f64 visit_char: char visit_str: &str
        visit_string: String visit_bytes: &[u8] visit_byte_buf: Vec<u8>
    }
}

/// The object's fields: each value is read as a [`Field`].
struct Fields<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(FieldSeed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct FieldSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FieldSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Field(deserializer))
    }
}

/// An `ObjectMeta`'s fields but `managedFields`, whose value is skipped without being built.
struct WithoutManagedFields<A>(A);

/// A key as the input holds it: borrowed where it can be.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutManagedFields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let key = match self.0.next_key::<Key<'de>>()? {
                None => return Ok(None),
                Some(key) => key,
            };
            let name = match &key {
                Key::Borrowed(name) => *name,
                Key::Owned(name) => name.as_str(),
            };
            if name == "managedFields" {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return match key {
                Key::Borrowed(name) => seed
                    .deserialize(de::value::BorrowedStrDeserializer::new(name))
                    .map(Some),
                Key::Owned(name) => seed.deserialize(name.into_deserializer()).map(Some),
            };
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use kube::core::{ObjectList, PartialObjectMeta, WatchEvent};
    use serde_json::json;

    use crate::api::{InferenceAccess, InferenceService};

    fn managed() -> serde_json::Value {
        json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}}])
    }

    fn metadata() -> serde_json::Value {
        json!({"name": "a", "namespace": "ns", "resourceVersion": "7", "uid": "u-1",
            "labels": {"a": "b"}, "annotations": {"note": "with \"escapes\""},
            "managedFields": managed(),
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u", "controller": true}]})
    }

    /// Everything but managedFields reads back as the full decoding reads it, whatever the
    /// kind, and a field named managedFields elsewhere (in a spec) is kept.
    #[test]
    fn only_the_metadatas_managed_fields_are_left_out() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(),
                "automountServiceAccountToken": false}),
            json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": metadata(),
                "spec": {"predictor": {"managedFields": managed(), "model": {"modelFormat": {"name": "sklearn"}}}},
                "status": {"url": "http://a.ns.example.com"}}),
            json!({"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
                "metadata": metadata(), "spec": {"inferenceService": {"name": "m"}}}),
        ];
        fn check<K: Serialize + de::DeserializeOwned>(object: &serde_json::Value) {
            let full: K = serde_json::from_value(object.clone()).unwrap();
            let mut expected = serde_json::to_value(&full).unwrap();
            expected["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            let text = serde_json::to_string(object).unwrap();
            let Lean(lean) = serde_json::from_str::<Lean<K>>(&text).unwrap();
            assert_eq!(serde_json::to_value(&lean).unwrap(), expected);
        }
        check::<ServiceAccount>(&objects[0]);
        check::<InferenceService>(&objects[1]);
        check::<InferenceAccess>(&objects[2]);
        let isvc: Lean<InferenceService> = serde_json::from_str(&objects[1].to_string()).unwrap();
        assert_eq!(isvc.0.spec["predictor"]["managedFields"], managed());
    }

    /// As lists and watch events deliver them, metadata-only objects included.
    #[test]
    fn lists_and_watch_events_are_read_without_them() {
        let secret = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": metadata()});
        let list = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": "9"}, "items": [secret.clone(), secret.clone()]});
        let list: ObjectList<Lean<PartialObjectMeta<Secret>>> =
            serde_json::from_str(&list.to_string()).unwrap();
        assert_eq!(list.items.len(), 2);
        for Lean(item) in &list.items {
            assert_eq!(item.metadata.managed_fields, None);
            assert_eq!(item.metadata.uid.as_deref(), Some("u-1"));
        }
        let event = json!({"type": "MODIFIED", "object": {"apiVersion": "v1",
            "kind": "ServiceAccount", "metadata": metadata()}});
        let event: WatchEvent<Lean<ServiceAccount>> =
            serde_json::from_str(&event.to_string()).unwrap();
        let WatchEvent::Modified(Lean(account)) = event else {
            panic!("not a modification: {event:?}")
        };
        assert_eq!(account.metadata.managed_fields, None);
        assert_eq!(account.metadata.labels.unwrap()["a"], "b");
        assert!(<Lean<PartialObjectMeta<Secret>> as Resource>::metadata_api());
    }
}
