/* The smallest myriad service: `cc hello.c $(pkg-config --cflags --libs myriad)`. */
#include <myriad.h>

static void hello(myr_req *req)
{
    myr_respond_str(req, 200, "text/plain", "Hello, World!");
}

int main(int argc, char **argv)
{
    myr_app *app = myr_app_new();
    myr_get(app, "/", hello);
    return myr_main(app, argc, argv);
}
