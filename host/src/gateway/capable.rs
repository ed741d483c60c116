//! What a request needs of its provider's adapter, checked before the adapter sees it.

use base64::Engine;
use serde_json::Value;

use super::Gateway;
use super::provider::Provider;
use crate::contract::{
    Capabilities, Capability, ChatRequest, ContentPart, Image, ImageSource, InlineImage,
};
use crate::error::GatewayError;

/// What a request needs done before its adapter can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Nothing: send it as it is.
    AsItIs,
    /// Its images by URL must be fetched and given inline (the adapter takes images, but not
    /// by URL); see [`Gateway::inline_images`].
    AfterFetchingImages,
}

/// Refuses a request that needs a capability the provider's adapter does not declare
/// (400 naming the feature and the provider), so that nothing a client asked for is dropped
/// on the way. A plain text request needs none and costs one pass over its messages.
fn check(provider: &Provider, request: &ChatRequest) -> Result<Ready, GatewayError> {
    let missing = Capabilities::needed_by(request).missing_from(provider.adapter.capabilities);
    match missing.first() {
        None => Ok(Ready::AsItIs),
        Some(Capability::Passthrough) => Err(unforwarded(provider, request.extra.as_deref())),
        // An image given by URL to an adapter that takes images, but only inline: chatd can
        // fetch it, once nothing else stands in the way.
        Some(Capability::ImageUrls) if provider.can(Capability::Images) => {
            match missing.without(Capability::ImageUrls).first() {
                None => Ok(Ready::AfterFetchingImages),
                Some(Capability::Passthrough) => {
                    Err(unforwarded(provider, request.extra.as_deref()))
                }
                Some(other) => Err(provider.not_capable(other)),
            }
        }
        // An image given by URL to an adapter that takes no images at all: it is images the
        // adapter lacks, however they are given.
        Some(Capability::ImageUrls) => Err(provider.not_capable(Capability::Images)),
        Some(capability) => Err(provider.not_capable(capability)),
    }
}

/// Images by URL fetched for one request at most: each is bounded in size and time, and a
/// request naming more is refused rather than made to hold that many in memory.
pub const MAX_FETCHED_IMAGES: usize = 16;

impl Gateway {
    /// Checks `request` against its provider's adapter and makes it what that adapter can
    /// take (images by URL fetched and given inline, when that is what it lacks).
    pub(super) async fn ready(
        &self,
        provider: &Provider,
        request: &mut ChatRequest,
    ) -> Result<(), GatewayError> {
        match check(provider, request)? {
            Ready::AsItIs => Ok(()),
            Ready::AfterFetchingImages => self.inline_images(provider, request).await,
        }
    }

    /// Replaces every image URL of `request` by the image, fetched and given inline (for an
    /// adapter that takes images inline only), when `[chatd.images] fetch_urls` allows it.
    async fn inline_images(
        &self,
        provider: &Provider,
        request: &mut ChatRequest,
    ) -> Result<(), GatewayError> {
        let policy = &provider.images;
        if !policy.fetch_urls {
            return Err(provider.unsupported(&format!(
                "images by URL cannot be carried: adapter {} takes images inline only, and \
                 chatd fetches no image URLs ([chatd.images] fetch_urls is off); send the image \
                 inline as a data: URL",
                provider.adapter.name
            )));
        }
        let mut wanted = Vec::new();
        for (m, message) in request.messages.iter().enumerate() {
            for (p, part) in message.content.iter().enumerate() {
                if let ContentPart::Image(Image {
                    source: ImageSource::Url(url),
                    ..
                }) = part
                {
                    wanted.push((m, p, url.clone()));
                }
            }
        }
        if wanted.len() > MAX_FETCHED_IMAGES {
            return Err(GatewayError::bad_param(
                "messages",
                format!(
                    "the request gives {} images by URL; chatd fetches {MAX_FETCHED_IMAGES} at \
                     most per request (send the others inline as data: URLs)",
                    wanted.len()
                ),
            ));
        }
        let fetches = wanted
            .iter()
            .map(|(_, _, url)| self.upstream.fetch_image(url, policy));
        let fetched = futures_util::future::join_all(fetches).await;
        for ((m, p, url), result) in wanted.into_iter().zip(fetched) {
            let param = format!("messages[{m}].content[{p}].image_url.url");
            let image = result.map_err(|why| GatewayError::ImageFetch {
                param,
                url: shown_url(&url),
                reason: why.to_string(),
            })?;
            if let ContentPart::Image(part) = &mut request.messages[m].content[p] {
                part.source = ImageSource::Inline(InlineImage {
                    media_type: image.media_type,
                    base64: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
                });
            }
        }
        Ok(())
    }
}

/// A client's URL as an error message quotes it: cut to 200 characters.
fn shown_url(url: &str) -> String {
    match url.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &url[..cut]),
        None => url.to_owned(),
    }
}

/// The refusal of passthrough fields by an adapter that forwards none: the fields are what
/// the client sent beyond the API's own, so the error names the first of them as the field
/// at fault (a misspelt `temprature` is caught here, as it was before passthrough).
pub(super) fn unforwarded(provider: &Provider, extra: Option<&str>) -> GatewayError {
    let fields = extra.and_then(|e| serde_json::from_str::<serde_json::Map<String, Value>>(e).ok());
    let field = fields.as_ref().and_then(|f| {
        let (key, value) = f.iter().next()?;
        // The native API's unknown `options` arrive as one `options` object.
        Some(match value {
            Value::Object(inner) if key == "options" && !inner.is_empty() => {
                format!("options.{}", inner.keys().next().map_or("", String::as_str))
            }
            _ => key.clone(),
        })
    });
    let field = field.unwrap_or_else(|| "extra".to_owned());
    GatewayError::bad_param(
        &field,
        format!(
            "unrecognized request field {field:?}: provider {} passes no extra fields to its \
             upstream (its adapter {} does not declare the \"passthrough\" capability)",
            provider.name, provider.adapter.name
        ),
    )
}
