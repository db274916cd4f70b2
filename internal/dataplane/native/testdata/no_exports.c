/* A shared object that is not an OmniRelay plugin: it exports nothing the
 * native ABI needs. */
int not_a_plugin(void) { return 42; }
