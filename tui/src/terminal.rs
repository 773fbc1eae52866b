//! The interactive app in a real terminal: one event queue fed by an input thread, a tick and the engine's waker; the
//! loop draws, waits for the next event and updates. The terminal is restored on exit and on panic.

use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::EnterAlternateScreen;
use kappa_core::{Engine, EngineOptions};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};

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
    let mut terminal = init_terminal()?;
    let mut app = App::new(engine);
    let result = run(&mut terminal, &mut app, &rx);
    // Panics on other threads were kept off the screen while the app drew; say them now, on the normal screen.
    for message in end_drawing() {
        eprintln!("{message}");
    }
    // The engine stops on its own thread; the app does not wait for it (a load or query under way would hold the
    // restored screen).
    drop(app);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// While the app owns the terminal: the thread that draws, and the messages of panics on other threads, said once the
/// terminal is restored.
struct Drawing {
    ui_thread: std::thread::ThreadId,
    held: Vec<String>,
}

/// `Some` while the app owns the terminal. The panic hook reads it; it is never swapped while threads run.
static DRAWING: Mutex<Option<Drawing>> = Mutex::new(None);

/// Installs the command line's one panic hook, before anything starts a thread.
///
/// Panics that the reader boundary catches (a corrupt Parquet file) are reported as clear errors, so the hook stays
/// silent for them. While the app owns the terminal, only a panic on the drawing thread ends the app, so only that one
/// restores the terminal before it is reported. A panic on any other thread (the engine's worker, DataFusion's runtime)
/// is caught there and shown in the app as an error: it must neither leave raw mode and the alternate screen while the
/// app goes on drawing, nor print over the screen, so its message is held and printed once the terminal is restored.
///
/// The hook is set once and decides by [`DRAWING`]: replacing hooks while the engine already loads (as `ratatui::init`
/// does) leaves moments where a reader's panic meets a hook that prints over the screen and leaves the alternate
/// screen.
pub(crate) fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut drawing = DRAWING.lock().unwrap_or_else(PoisonError::into_inner);
        let on_ui_thread = drawing
            .as_ref()
            .is_some_and(|d| d.ui_thread == std::thread::current().id());
        if on_ui_thread {
            *drawing = None;
            drop(drawing);
            restore_terminal();
            previous(info);
        } else if kappa_core::panic_is_expected() {
            // Caught by the reader boundary and reported as an error.
        } else if let Some(d) = drawing.as_mut() {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            d.held.push(format!(
                "a thread ({name}) panicked while the app ran (the app went on): {info}"
            ));
        } else {
            drop(drawing);
            previous(info);
        }
    }));
}

/// Enters raw mode and the alternate screen, with this thread as the one whose panic ends the app.
fn init_terminal() -> Result<ratatui::DefaultTerminal> {
    *DRAWING.lock().unwrap_or_else(PoisonError::into_inner) = Some(Drawing {
        ui_thread: std::thread::current().id(),
        held: Vec::new(),
    });
    // Not `ratatui::init`: it installs its own panic hook, which restores the terminal on a panic on any thread.
    let entered = crossterm::terminal::enable_raw_mode()
        .and_then(|()| {
            crossterm::execute!(std::io::stdout(), EnterAlternateScreen, EnableMouseCapture)
        })
        .and_then(|()| Terminal::new(CrosstermBackend::new(std::io::stdout())));
    match entered {
        Ok(terminal) => Ok(terminal),
        Err(e) => {
            end_drawing();
            Err(e).context("setting up the terminal (raw mode, alternate screen)")
        }
    }
}

/// Restores the terminal and gives back the messages of the panics held while the app drew.
fn end_drawing() -> Vec<String> {
    let held = DRAWING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .map(|d| d.held)
        .unwrap_or_default();
    restore_terminal();
    held
}

/// Leaves mouse capture, raw mode and the alternate screen.
fn restore_terminal() {
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
}
