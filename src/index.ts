/**
 * The jupyter-tasks frontend: a "Tasks" sidebar panel, a submit dialog, a
 * status bar item and notifications, over the server's `/tasks` API.
 *
 * Only `app.shell` is used, so it runs in JupyterLab and in Notebook 7 alike;
 * the palette, status bar, settings and layout restorer are optional.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { openSubmitDialog } from './dialog';
import { submitIcon, tasksIcon } from './icons';
import { LiveTasks } from './live';
import { NotifyMode, TaskNotifier } from './notifications';
import { PANEL_ID, TasksPanel } from './panel';
import { TasksService } from './service';
import { TasksStatusItem } from './statusbar';
import { TaskStore } from './store';

/** The plugin id; also the settings' id. */
const PLUGIN_ID = 'jupyter-tasks:plugin';

/** Command ids. */
export namespace CommandIDs {
  export const open = 'jupyter-tasks:open';
  export const submit = 'jupyter-tasks:submit';
  export const showTask = 'jupyter-tasks:show-task';
  export const refresh = 'jupyter-tasks:refresh';
}

function activate(
  app: JupyterFrontEnd,
  settingRegistry: ISettingRegistry | null,
  palette: ICommandPalette | null,
  statusBar: IStatusBar | null,
  restorer: ILayoutRestorer | null
): void {
  const service = new TasksService(app.serviceManager.serverSettings);
  const store = new TaskStore();
  const live = new LiveTasks(service, store);
  const { commands, shell } = app;

  const openPanel = () => {
    shell.activateById(PANEL_ID);
  };
  const submit = async () => {
    const task = await openSubmitDialog(service);
    if (task) {
      store.merge([task], 'rest');
      openPanel();
    }
  };
  const panel = new TasksPanel({
    service,
    store,
    live,
    onSubmit: () => void submit()
  });
  const showTask = (taskId: string) => {
    panel.showDetails(taskId);
    openPanel();
  };

  try {
    shell.add(panel, 'left', { rank: 950 });
  } catch (reason) {
    console.warn(
      'jupyter-tasks: this page has no left area for the panel',
      reason
    );
  }
  restorer?.add(panel, 'jupyter-tasks');

  commands.addCommand(CommandIDs.open, {
    label: 'Show Tasks Panel',
    caption: 'Open the Tasks panel',
    icon: args => (args.isPalette ? undefined : tasksIcon),
    execute: openPanel
  });
  commands.addCommand(CommandIDs.submit, {
    label: 'Submit Task...',
    caption: 'Submit a background task',
    icon: args => (args.isPalette ? undefined : submitIcon),
    execute: submit
  });
  commands.addCommand(CommandIDs.showTask, {
    label: 'Show Task Details',
    caption: 'Show one task in the Tasks panel',
    execute: args => {
      const taskId = args.taskId;
      if (typeof taskId === 'string' && taskId) {
        showTask(taskId);
      }
    }
  });
  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Tasks',
    caption: 'Reload the task list from the server',
    execute: () => live.refresh()
  });
  if (palette) {
    for (const command of [
      CommandIDs.submit,
      CommandIDs.open,
      CommandIDs.refresh
    ]) {
      palette.addItem({ command, category: 'Tasks' });
    }
  }

  if (statusBar) {
    statusBar.registerStatusItem('jupyter-tasks:status', {
      item: new TasksStatusItem(store, openPanel),
      align: 'left',
      rank: 4
    });
  }

  const notifier = new TaskNotifier(store, {
    showTask,
    showPanel: () => {
      panel.showList();
      openPanel();
    }
  });
  if (settingRegistry) {
    settingRegistry
      .load(PLUGIN_ID)
      .then(settings => {
        const apply = () => {
          notifier.mode = settings.get('notifications').composite as NotifyMode;
          live.pageSize = settings.get('pageSize').composite as number;
        };
        apply();
        settings.changed.connect(apply);
      })
      .catch(reason => {
        console.warn('jupyter-tasks: could not load settings', reason);
      });
  }

  live.start();
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'A sidebar panel, status item and notifications for background tasks.',
  autoStart: true,
  optional: [ISettingRegistry, ICommandPalette, IStatusBar, ILayoutRestorer],
  activate
};

export default plugin;
