//! The interactive app in a real terminal: one event queue fed by an input thread, a tick and the engine's waker; the
//! loop draws, waits for the next event and updates. The terminal is restored on exit and on panic.

use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
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
pub fn start(
    inputs: &[std::path::PathBuf],
    events: &Sender<Event>,
    options: &EngineOptions,
) -> Result<Engine> {
    let pipeline = kappa_core::Pipeline::open(inputs)?;
    let tx = events.clone();
    let waker = Arc::new(move || {
        let _ = tx.send(Event::Engine);
    });
    let options = EngineOptions {
        watch: true,
        ..options.clone()
    };
    Ok(Engine::start_with(pipeline, waker, options)?)
}

/// Opens the app in this terminal.
pub fn open(inputs: &[std::path::PathBuf], options: &EngineOptions) -> Result<ExitCode> {
    let (tx, rx) = channel();
    let engine = start(inputs, &tx, options)?;
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
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut terminal = init_terminal(held.clone());
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let mut app = App::new(engine);
    let result = run(&mut terminal, &mut app, &rx);
    restore_terminal();
    // Panics on other threads were kept off the screen while the app drew; say them now, on the normal screen.
    for message in held
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        eprintln!("{message}");
    }
    // The engine stops on its own thread; the app does not wait for it (a load or query under way would hold the
    // restored screen).
    drop(app);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Enters raw mode and the alternate screen, with the app's panic hook.
///
/// Only a panic on this (the drawing) thread ends the app, so only that one restores the terminal before it is
/// reported. A panic on any other thread (the engine's worker, DataFusion's runtime, a corrupt file's reader) is caught
/// there and shown in the app as an error: it must neither leave raw mode and the alternate screen while the app goes
/// on drawing, nor print over the screen. Its message is kept in `held`, and printed once the terminal is restored.
fn init_terminal(held: Arc<Mutex<Vec<String>>>) -> ratatui::DefaultTerminal {
    let previous = std::panic::take_hook();
    let terminal = ratatui::init();
    // ratatui's own hook restores the terminal on a panic on any thread: replace it.
    drop(std::panic::take_hook());
    let ui_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui_thread {
            restore_terminal();
            previous(info);
        } else if !kappa_core::panic_is_expected() {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!(
                    "a thread ({name}) panicked while the app ran (the app went on): {info}"
                ));
        }
    }));
    terminal
}

/// Leaves mouse capture, raw mode and the alternate screen.
fn restore_terminal() {
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
}
