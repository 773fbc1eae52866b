//! The interactive app in a real terminal: one event queue fed by an input thread, a tick and the engine's waker; the
//! loop draws, waits for the next event and updates. The terminal is restored on exit and on panic.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use kappa_core::{Engine, EngineOptions};
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::app::{App, Event};

/// How often the app wakes when nothing happens (spinners, answers to poll).
const TICK: Duration = Duration::from_millis(100);

/// Runs the app until the user quits: draw, wait for the next event (or a tick), update, with every queued event
/// handled before the next frame. Generic over the backend, so tests run it on a `TestBackend`.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &Receiver<Event>,
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    while !app.quit {
        terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
        match events.recv_timeout(TICK) {
            Ok(event) => app.handle(event),
            Err(RecvTimeoutError::Timeout) => app.handle(Event::Tick),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(event) = events.try_recv() {
            app.handle(event);
        }
    }
    Ok(())
}

/// The engine over the inputs, watching the files, waking the app's queue.
pub fn start(inputs: &[std::path::PathBuf], events: &Sender<Event>) -> Result<Engine> {
    let pipeline = crate::cli::open_pipeline(inputs)?;
    let tx = events.clone();
    let waker = Arc::new(move || {
        let _ = tx.send(Event::Engine);
    });
    let options = EngineOptions {
        watch: true,
        ..crate::cli::engine_options()
    };
    Ok(Engine::start_with(pipeline, waker, options)?)
}

/// Opens the app in this terminal.
pub fn open(inputs: &[std::path::PathBuf]) -> Result<ExitCode> {
    let (tx, rx) = channel();
    let engine = start(inputs, &tx)?;
    let input = tx.clone();
    std::thread::Builder::new()
        .name("kappa-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if input.send(Event::Term(event)).is_err() {
                    break;
                }
            }
        })
        .context("starting the input thread")?;
    let mut terminal = ratatui::init();
    // ratatui's panic hook restores the screen; mouse capture is ours to undo.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        hook(info);
    }));
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let mut app = App::new(engine);
    let result = run(&mut terminal, &mut app, &rx);
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result?;
    Ok(ExitCode::SUCCESS)
}
