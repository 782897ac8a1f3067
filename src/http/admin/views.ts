/** The API's JSON views are the shared ones (src/views.ts), so the CLI and the API agree. */
export { auditView, keyView, memberView, usageReportView, workspaceView } from '../../views.ts';
