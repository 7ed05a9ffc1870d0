// broken: does not compile (an undeclared name); for tests of one failing gadget among others.
SEC("classifier/ingress/broken")
int broken(struct __sk_buff *skb)
{
    return no_such_name;
}
