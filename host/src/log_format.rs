//! How a log line looks: `tracing_subscriber`'s default ("full") format, with the request
//! being served named as if it were a span, `request{request_id=…}:`.
//!
//! Why not a real span: entering one on every poll of every request and its response body
//! costs the registry's span bookkeeping (bench/README.md, "Request ids"). Unless traces are
//! exported or `RUST_LOG` filters by span, the request's id is only in scope on its thread
//! while the request is polled (see [`crate::request_id`]), and this format prints it.

use std::fmt;

use nu_ansi_term::{Color, Style};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The log line format; see the module notes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let style = |s: Style| if ansi { s } else { Style::new() };
        let (dimmed, bold) = (style(Style::new().dimmed()), style(Style::new().bold()));
        let meta = event.metadata();

        write!(writer, "{}", dimmed.prefix())?;
        if SystemTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        write!(writer, "{} ", dimmed.suffix())?;
        let (color, name) = match *meta.level() {
            Level::TRACE => (Color::Purple, "TRACE"),
            Level::DEBUG => (Color::Blue, "DEBUG"),
            Level::INFO => (Color::Green, " INFO"),
            Level::WARN => (Color::Yellow, " WARN"),
            Level::ERROR => (Color::Red, "ERROR"),
        };
        write!(writer, "{} ", style(color.normal()).paint(name))?;

        // Each span of the scope as `name{fields}:`, the request in scope first.
        let mut scoped = false;
        let mut span = |writer: &mut Writer<'_>, name: &str, fields: Option<&dyn fmt::Display>| {
            scoped = true;
            write!(writer, "{}", bold.paint(name))?;
            if let Some(fields) = fields {
                write!(writer, "{}{fields}{}", bold.paint("{"), bold.paint("}"))?;
            }
            write!(writer, "{}", dimmed.paint(":"))
        };
        crate::request_id::with_current(|id| match id {
            Some(id) => span(
                &mut writer,
                "request",
                Some(&format_args!("request_id={id}")),
            ),
            None => Ok(()),
        })?;
        if let Some(scope) = ctx.event_scope() {
            for entered in scope.from_root() {
                let extensions = entered.extensions();
                let fields = extensions
                    .get::<FormattedFields<N>>()
                    .filter(|fields| !fields.is_empty())
                    .map(|fields| &fields.fields as &dyn fmt::Display);
                span(&mut writer, entered.metadata().name(), fields)?;
            }
        }
        if scoped {
            writer.write_char(' ')?;
        }
        write!(
            writer,
            "{}{} ",
            dimmed.paint(meta.target()),
            dimmed.paint(":")
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// What `fmt` with `format` writes for one event inside a span, outside any request and
    /// inside one.
    fn lines(
        format: impl FormatEvent<
            tracing_subscriber::Registry,
            tracing_subscriber::fmt::format::DefaultFields,
        > + Send
        + Sync
        + 'static,
        ansi: bool,
    ) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .event_format(format)
            .with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("attempt", retry = 1);
            let _entered = span.enter();
            tracing::info!(model = "m", "falling back");
            crate::request_id::in_scope_for_tests("req-1", || {
                tracing::warn!(code = 503, "retrying");
            });
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        // Timestamps differ between runs: compare what follows them.
        text.lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_look_like_the_default_format_with_the_request_as_a_span() {
        let ours = lines(LineFormat, false);
        let default = lines(tracing_subscriber::fmt::format::Format::default(), false);
        let target = module_path!();
        assert_eq!(
            ours,
            [
                format!(" INFO attempt{{retry=1}}: {target}: falling back model=\"m\""),
                format!(
                    " WARN request{{request_id=req-1}}:attempt{{retry=1}}: {target}: retrying code=503"
                ),
            ]
        );
        // Outside a request, exactly what the default format writes, in colour too.
        assert_eq!(ours[0], default[0]);
        let coloured = lines(LineFormat, true);
        assert_eq!(
            coloured[0],
            lines(tracing_subscriber::fmt::format::Format::default(), true)[0]
        );
        assert!(
            coloured[1].contains("\u{1b}[1mrequest"),
            "{:?}",
            coloured[1]
        );
    }
}
