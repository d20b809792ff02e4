/** The one place the version is written (package.json is checked against it in a test). */
export const VERSION = '0.1.0';
