/**
 * The task list: windowed (only the rows in view are in the DOM, so hundreds
 * of live rows stay smooth) and keyboard navigable as a tree.
 */
import React, {
  useCallback,
  useEffect,
  useLayoutEffect,
  useRef,
  useState
} from 'react';

import type { TaskActions } from './actions';
import { GroupRow, TaskRow } from './row';
import type { Row } from './rows';
import { isFinished } from './types';

/** Height of every row, in pixels (fixed, so the window is simple arithmetic). */
export const ROW_HEIGHT = 54;

/** Rows rendered above and below the visible ones. */
const OVERSCAN = 6;

/** Props of the list. */
export interface ITaskListProps {
  rows: Row[];
  now: number;
  actions: TaskActions;
  onToggleGroup: (group: string) => void;
  /** Shown when there are no rows. */
  empty: React.ReactNode;
  /** Shown after the last row (e.g. a "load more" button). */
  footer?: React.ReactNode;
}

/** The windowed, keyboard-navigable list of rows. */
export function TaskList(props: ITaskListProps): JSX.Element {
  const { rows, actions, onToggleGroup } = props;
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);
  const [activeKey, setActiveKey] = useState<string | null>(null);
  /** The row to focus once it is rendered (after keyboard navigation). */
  const focusKey = useRef<string | null>(null);

  useLayoutEffect(() => {
    const node = scroller.current;
    if (!node) {
      return;
    }
    const observer = new ResizeObserver(() => {
      setViewport(node.clientHeight || 600);
    });
    observer.observe(node);
    setViewport(node.clientHeight || 600);
    return () => observer.disconnect();
  }, []);

  const found =
    activeKey === null ? -1 : rows.findIndex(r => r.key === activeKey);
  const activeIndex = found >= 0 ? found : rows.length ? 0 : -1;

  const moveTo = useCallback(
    (index: number, focus: boolean) => {
      if (rows.length === 0) {
        return;
      }
      const clamped = Math.max(0, Math.min(rows.length - 1, index));
      setActiveKey(rows[clamped].key);
      const node = scroller.current;
      if (node) {
        const top = clamped * ROW_HEIGHT;
        if (top < node.scrollTop) {
          node.scrollTop = top;
        } else if (top + ROW_HEIGHT > node.scrollTop + node.clientHeight) {
          node.scrollTop = top + ROW_HEIGHT - node.clientHeight;
        }
      }
      focusKey.current = focus ? rows[clamped].key : null;
    },
    [rows]
  );

  // Move DOM focus only after keyboard navigation, once the row is rendered.
  useEffect(() => {
    const key = focusKey.current;
    if (key === null) {
      return;
    }
    const node = scroller.current?.querySelector<HTMLElement>(
      `[data-key="${CSS.escape(key)}"]`
    );
    if (node) {
      focusKey.current = null;
      node.focus();
    }
  });

  const onKeyDown = (event: React.KeyboardEvent) => {
    const row = rows[activeIndex];
    if (!row) {
      return;
    }
    const page = Math.max(1, Math.floor(viewport / ROW_HEIGHT) - 1);
    let handled = true;
    switch (event.key) {
      case 'ArrowDown':
        moveTo(activeIndex + 1, true);
        break;
      case 'ArrowUp':
        moveTo(activeIndex - 1, true);
        break;
      case 'PageDown':
        moveTo(activeIndex + page, true);
        break;
      case 'PageUp':
        moveTo(activeIndex - page, true);
        break;
      case 'Home':
        moveTo(0, true);
        break;
      case 'End':
        moveTo(rows.length - 1, true);
        break;
      case 'ArrowRight':
        if (row.kind === 'group' && !row.expanded) {
          onToggleGroup(row.group);
        } else if (row.kind === 'group') {
          moveTo(activeIndex + 1, true);
        }
        break;
      case 'ArrowLeft':
        if (row.kind === 'group' && row.expanded) {
          onToggleGroup(row.group);
        } else if (row.kind === 'task' && row.level === 2) {
          const parent = rows
            .slice(0, activeIndex)
            .map(r => r.kind)
            .lastIndexOf('group');
          moveTo(parent, true);
        }
        break;
      case 'Enter':
      case ' ':
        if (row.kind === 'group') {
          onToggleGroup(row.group);
        } else if (event.key === 'Enter') {
          actions.show(row.task);
        } else {
          handled = false;
        }
        break;
      case 'Delete':
        if (row.kind === 'task' && actions.canRemove(row.task)) {
          void actions.remove(row.task);
        } else {
          handled = false;
        }
        break;
      default:
        handled = false;
    }
    if (handled) {
      event.preventDefault();
      event.stopPropagation();
    }
  };

  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(
    rows.length,
    Math.ceil((scrollTop + viewport) / ROW_HEIGHT) + OVERSCAN
  );
  const onActivate = useCallback(
    (index: number) => {
      if (rows[index]) {
        setActiveKey(rows[index].key);
      }
    },
    [rows]
  );

  // The active row stays in the DOM even when scrolled away, so that Tab
  // always finds the one focusable row of the tree.
  const indices: number[] = [];
  if (activeIndex >= 0 && (activeIndex < first || activeIndex >= last)) {
    indices.push(activeIndex);
  }
  for (let index = first; index < last; index++) {
    indices.push(index);
  }
  const rendered: JSX.Element[] = [];
  for (const index of indices) {
    const row = rows[index];
    const base = {
      index,
      top: index * ROW_HEIGHT,
      height: ROW_HEIGHT,
      setSize: rows.length,
      active: index === activeIndex,
      onActivate
    };
    if (row.kind === 'task') {
      rendered.push(
        <TaskRow
          key={row.key}
          {...base}
          task={row.task}
          level={row.level}
          now={isFinished(row.task.status) ? 0 : props.now}
          actions={actions}
        />
      );
    } else {
      rendered.push(
        <GroupRow
          key={row.key}
          {...base}
          group={row.group}
          summary={row.summary}
          expanded={row.expanded}
          now={row.summary.finished_at ? 0 : props.now}
          onToggle={onToggleGroup}
        />
      );
    }
  }

  return (
    <div
      className="jp-TasksList"
      ref={scroller}
      onScroll={event => setScrollTop(event.currentTarget.scrollTop)}
    >
      {rows.length === 0 ? (
        <div className="jp-TasksList-empty">{props.empty}</div>
      ) : (
        <div
          className="jp-TasksList-rows"
          role="tree"
          aria-label="Tasks"
          style={{ height: rows.length * ROW_HEIGHT }}
          onKeyDown={onKeyDown}
        >
          {rendered}
        </div>
      )}
      {props.footer}
    </div>
  );
}
